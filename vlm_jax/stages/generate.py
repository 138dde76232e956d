"""The generate job: VideoBERT text-to-video and forecasting from a trained run, as PNG strips.

Used by `vlm-jax generate`; see that command for the files written.
"""

import os

from vlm_jax.data import files as files_lib
from vlm_jax.videobert import codebook as codebook_lib
from vlm_jax.videobert import generation
from vlm_jax.videobert import inference as videobert_inference


def read_sentences(path: str) -> list[str]:
  """The non-empty lines of a UTF-8 text file, stripped."""
  with open(path, encoding='utf-8') as f:
    return [line.strip() for line in f if line.strip()]


def run(workdir: str, codebook_path: str, videos: str, output: str, sentences=(), tokens=(),
        num_tokens: int = 4, rates=(1, 2, 3, 4, 5), fps: float = 20.0,
        clip_frames: int = 30) -> dict:
  """Generates, draws and returns {'text_to_video': [...], 'forecast': [...]}."""
  if not sentences and not tokens:
    raise ValueError('give --sentences and/or --tokens')
  loaded = videobert_inference.load(workdir)
  codebook = codebook_lib.Codebook.load(codebook_path)
  if codebook.num_leaves != loaded.vocab.num_visual_tokens:
    raise ValueError(f'{codebook_path}: {codebook.num_leaves} leaves, but the model has '
                     f'{loaded.vocab.num_visual_tokens} visual tokens')
  bad = [t for t in tokens if not 0 <= int(t) < codebook.num_leaves]
  if bad:
    raise ValueError(f'--tokens {bad} are not in [0, {codebook.num_leaves})')
  frames = generation.TokenFrames(codebook, videos, fps, clip_frames)
  os.makedirs(output, exist_ok=True)
  result: dict = {'workdir': os.path.abspath(workdir), 'checkpoint_step': loaded.step}
  if sentences:
    generated = generation.text_to_video(loaded, sentences, num_tokens)
    result['text_to_video'] = [{'sentence': s, 'tokens': t}
                               for s, t in zip(sentences, generated)]
    generation.save_strips(os.path.join(output, 'text_to_video.png'),
                           list(zip(sentences, generated)), frames, 'text to video')
  if tokens:
    best = generation.forecast(loaded, [int(t) for t in tokens], rates)
    result['forecast'] = [{'token': int(t), 'rate': int(r), 'next': best[i, j].tolist()}
                          for i, t in enumerate(tokens) for j, r in enumerate(rates)]
    rows = [(f'#{int(t)}  +{r} clips', [int(t)] + best[i, j].tolist())
            for i, t in enumerate(tokens) for j, r in enumerate(rates)]
    generation.save_strips(os.path.join(output, 'forecast.png'), rows, frames,
                           'forecasting: the token, then its top-3 successors')
  files_lib.write_json(os.path.join(output, 'generation.json'), result)
  return result
