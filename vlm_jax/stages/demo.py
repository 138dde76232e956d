"""The demo job: the config's system through its demo, from pixels to a report.

Used by `vlm-jax demo`; vlm_jax/demo/ holds the demos themselves (stages and reports).
"""

from typing import Any

from vlm_jax import systems
from vlm_jax.demo import cbt, clipbert, videobert, videoclip


def run(workdir: str, config, videos_dir: str | None = None,
        transcripts: str | None = None) -> dict[str, Any]:
  """Runs (or resumes) the demo of config.system in `workdir`; returns the report's metrics.

  Args:
    workdir: where every stage writes (a re-run resumes).
    config: configs/demo.py's config.
    videos_dir, transcripts: the user's videos and their transcripts instead of
      the rendered corpus (the VideoBERT demo; the others render).
  """
  system = systems.name_of(config)
  if system in ('videoclip', 'cbt', 'clipbert') and videos_dir:
    raise ValueError(f'--videos: the {system} demo runs on the rendered corpus only')
  if system == 'videoclip':
    return videoclip.run(workdir, config)
  if system == 'cbt':
    return cbt.run(workdir, config)
  if system == 'clipbert':
    return clipbert.run(workdir, config)
  if videos_dir and not transcripts:
    raise ValueError('--videos needs --transcripts (the narration VideoBERT learns from)')
  return videobert.run(workdir, config, videos_dir, transcripts)
