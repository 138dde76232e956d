"""A token-level synthetic cooking corpus with learnable video-text structure.

Each video is a recipe of steps, each narrated in one of the training
phrasings of vlm_jax.data.narration ("next we <verb> the <noun>.", ...). A step lasts several 1.5-s clips, and the visual
token of each clip depends on the step's words: the (verb, noun) pair owns a
block of the visual vocabulary and most clips draw from that block, the rest
are noise. Some videos have no ASR (video-only records). A model that learns
the cross-modal structure predicts masked visual tokens from the sentence and
tells aligned from misaligned pairs; this is the fast fixture of the trainer.
"""

import os

import numpy as np

from vlm_jax.data import narration, records

VERBS = ('slice', 'chop', 'stir', 'peel', 'fry', 'boil', 'mix', 'pour', 'cut',
         'add', 'bake', 'wash')
NOUNS = ('tomato', 'onion', 'egg', 'potato', 'carrot', 'garlic', 'butter',
         'cheese', 'chicken', 'rice', 'pasta', 'lemon')
CLIP_SECONDS = 1.5
# Bumped whenever the generator changes, so cached corpora are not reused.
VERSION = 3
# A data root shared by runs (the corpus is then written once for all of them).
ROOT_VARIABLE = 'VLM_JAX_DATA'


def data_root(workdir: str | None) -> str:
  """Where generated corpora go: $VLM_JAX_DATA if set, else WORKDIR/data.

  Never the current directory: a run's files stay with the run, wherever the
  command was started. Local roots come back absolute, URLs (gs://) as they are.

  Raises:
    ValueError: neither $VLM_JAX_DATA nor a workdir.
  """
  root = os.environ.get(ROOT_VARIABLE)
  if not root:
    if workdir is None:
      raise ValueError(f'no data root for the synthetic corpus: set {ROOT_VARIABLE} or give '
                       'a workdir')
    root = os.path.join(workdir, 'data')
  return root if '://' in root else os.path.abspath(root)


def visual_block(verb: int, noun: int, num_visual_tokens: int) -> tuple[int, int]:
  """The [start, end) range of visual tokens owned by a (verb, noun) pair."""
  pairs = len(VERBS) * len(NOUNS)
  size = max(1, num_visual_tokens // pairs)
  start = ((verb * len(NOUNS) + noun) * size) % num_visual_tokens
  return start, min(start + size, num_visual_tokens)


def make_video(rng: np.random.Generator, video_id: str, tokenize, num_visual_tokens: int,
               asr_prob: float = 0.85, signal: float = 0.85) -> records.VideoRecord:
  """One synthetic recipe video. `tokenize` maps a list of texts to WordPiece ids."""
  num_steps = int(rng.integers(3, 8))
  steps = [(int(rng.integers(len(VERBS))), int(rng.integers(len(NOUNS))))
           for _ in range(num_steps)]
  texts, times, tokens, clip_times = [], [], [], []
  clip = 0
  for verb, noun in steps:
    num_clips = int(rng.integers(6, 17))
    start = clip * CLIP_SECONDS
    low, high = visual_block(verb, noun, num_visual_tokens)
    for _ in range(num_clips):
      if rng.random() < signal:
        tokens.append(int(rng.integers(low, high)))
      else:
        tokens.append(int(rng.integers(num_visual_tokens)))
      clip_times.append((clip * CLIP_SECONDS, (clip + 1) * CLIP_SECONDS))
      clip += 1
    texts.append(narration.say_step(rng, 'train', VERBS[verb], NOUNS[noun]))
    times.append((start, clip * CLIP_SECONDS))
  has_asr = rng.random() < asr_prob
  return records.VideoRecord(
      video_id=video_id,
      sentences=tokenize(texts) if has_asr else [],
      sentence_times=times if has_asr else [],
      visual_tokens=tokens, clip_times=clip_times)


def write_corpus(output_dir: str, num_videos: int, tokenize, num_visual_tokens: int,
                 seed: int = 0, num_shards: int = 4) -> list[str]:
  """Writes `num_videos` synthetic videos as TFRecord shards; returns the paths."""
  rng = np.random.default_rng(seed)
  videos = (make_video(rng, f'synthetic_{i:06d}', tokenize, num_visual_tokens)
            for i in range(num_videos))
  return records.write_shards(videos, output_dir, num_shards, prefix='synthetic')
