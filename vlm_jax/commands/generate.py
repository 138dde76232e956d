"""vlm-jax generate: VideoBERT text-to-video and future forecasting, as PNG strips.

  vlm-jax generate --workdir RUN --codebook codebook.npz --videos VIDEOS_DIR \\
      --output DIR --sentences recipe.txt [--num_tokens 4]
  vlm-jax generate --workdir RUN --codebook codebook.npz --videos VIDEOS_DIR \\
      --output DIR --tokens 3,17,42 [--rates 1,2,3,4,5]

With --sentences (one sentence per line; a recipe) it writes
DIR/text_to_video.png (a row per sentence: its most likely visual tokens) and
with --tokens DIR/forecast.png (a row per token and rate: the top-3 tokens that
many clips ahead), plus DIR/generation.json with the ids. Tokens are shown as
the middle frame of the training clip nearest their centroid, decoded from
VIDEOS_DIR (the videos the codebook was built from).
"""

import json
import os

from absl import app, flags

from vlm_jax.videobert import codebook as codebook_lib
from vlm_jax.videobert import generation
from vlm_jax.videobert import inference as videobert_inference

_WORKDIR = flags.DEFINE_string('workdir', None, 'vlm-jax train workdir.', allow_override=True)
_CODEBOOK = flags.DEFINE_string('codebook', None, 'Codebook .npz from build-codebook.',
                                allow_override=True)
_VIDEOS = flags.DEFINE_string('videos', None, 'Folder of the videos the codebook was built '
                              'from.', allow_override=True)
_OUTPUT = flags.DEFINE_string('output', None, 'Output folder.', allow_override=True)
_SENTENCES = flags.DEFINE_string('sentences', None, 'Text file, one sentence per line.')
_TOKENS = flags.DEFINE_list('tokens', [], 'Visual token ids to forecast from.')
_NUM_TOKENS = flags.DEFINE_integer('num_tokens', 4, 'Visual tokens per sentence.')
_RATES = flags.DEFINE_list('rates', ['1', '2', '3', '4', '5'], 'Forecast this many clips '
                           'ahead.')
_FPS = flags.DEFINE_float('fps', 20.0, 'Decoding rate of the clips (as for the features).',
                          allow_override=True)
_CLIP_FRAMES = flags.DEFINE_integer('clip_frames', 30, 'Frames per clip.', allow_override=True)
# Marked required by the CLI when this command runs (not on import: the demo
# imports commands as libraries).
REQUIRED_FLAGS = ['workdir', 'codebook', 'videos', 'output']


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
  with open(os.path.join(output, 'generation.json'), 'w') as f:
    json.dump(result, f, indent=2)
  return result


def main(argv):
  del argv
  sentences = []
  if _SENTENCES.value:
    with open(_SENTENCES.value, encoding='utf-8') as f:
      sentences = [line.strip() for line in f if line.strip()]
  run(_WORKDIR.value, _CODEBOOK.value, _VIDEOS.value, _OUTPUT.value, sentences, _TOKENS.value,
      _NUM_TOKENS.value, [int(r) for r in _RATES.value], _FPS.value, _CLIP_FRAMES.value)
  print(f'wrote {_OUTPUT.value}')


if __name__ == '__main__':
  flags.mark_flags_as_required(REQUIRED_FLAGS)
  app.run(main)
