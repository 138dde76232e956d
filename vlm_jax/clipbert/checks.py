"""Checks of a ClipBERT config (configs/clipbert.py), run before anything is built.

`validate` checks the model, loss, optimizer and loop fields; `data_source`
the training items' fields (which only the trainer reads); `items` what was
read against the config; `readable_video` that at least one video (or image)
opens.
"""

from typing import Sequence

from vlm_jax import config_checks as checks
from vlm_jax.clipbert import consensus
from vlm_jax.clipbert import data as data_lib
from vlm_jax.clipbert import model as clipbert_model
from vlm_jax.clipbert import step as step_lib
from vlm_jax.config_checks import require
from vlm_jax.data import frames as frames_lib
from vlm_jax.data.files import DataError
from vlm_jax.models import resnet

# The fields that name the training items, of which exactly one is set.
SOURCES = ('train_jsonl', 'train_msrvtt_csv', 'train_youcook2')


def grid_size(image_size: int) -> int:
  """Rows (= columns) of the visual grid of square frames: res5 (stride 32), then a 2x2 pool.

  Each stride-2 step maps n to floor((n - 1) / 2) + 1, as PyTorch's; the
  pool floors. 448 px: 14 -> 7.
  """
  side = image_size
  for _ in range(5):  # the stem conv, its max pool, res3, res4, res5
    side = (side - 1) // 2 + 1
  return side // 2


def validate(config, num_devices: int, num_processes: int) -> None:
  """Raises ConfigError naming the first field whose value cannot work.

  Args:
    config: a configs/clipbert.py config.
    num_devices, num_processes: JAX's.
  """
  m, d, o, t = config.model, config.data, config.optim, config.train
  data_parallel, _ = checks.mesh_shape(config.mesh, num_devices)
  checks.numerics(m)
  if m.text_checkpoint:  # the checkpoint's own shape wins over the config's
    require(not m.init_checkpoint, 'model.text_checkpoint',
            f'{m.text_checkpoint!r} and model.init_checkpoint={m.init_checkpoint!r} both set: '
            "ClipBERT's checkpoint holds its own BERT; set one")
  else:
    checks.heads(m)
  require(m.task in clipbert_model.TASKS, 'model.task',
          f'must be one of {clipbert_model.TASKS}, got {m.task!r}')
  if m.task == clipbert_model.QA:
    require(m.num_answers >= 1, 'model.num_answers',
            f"'qa' needs >= 1 answer class, got {m.num_answers}")
  require(m.resnet in resnet.PRESETS, 'model.resnet',
          f'must be one of {tuple(resnet.PRESETS)}, got {m.resnet!r}')
  require(0 <= m.freeze_at <= 5, 'model.freeze_at', f'must be in 0 ... 5, got {m.freeze_at}')
  require(m.consensus in consensus.METHODS, 'model.consensus',
          f'must be one of {consensus.METHODS}, got {m.consensus!r}')
  features = step_lib.feature_dim(config)
  require(features >= 0, 'model.feature_dim',
          f'must be >= 0 (0 = frames, D = clip features of width D), got {features}')
  if features:
    require(not m.init_checkpoint, 'model.feature_dim',
            f'{features} replaces the frame encoder, but model.init_checkpoint='
            f"{m.init_checkpoint!r} is ClipBERT's, whose ResNet it cannot load")
  grid = 1 if features else grid_size(d.image_size)
  require(grid >= 1, 'data.image_size',
          f'{d.image_size} px frames give no visual token (res5 / 2 < 1 cell): need >= 64')
  require(grid <= min(m.max_grid_rows, m.max_grid_cols), 'data.image_size',
          f'{d.image_size} px frames give a {grid} x {grid} grid, larger than the position '
          f'tables (model.max_grid_rows={m.max_grid_rows}, '
          f'model.max_grid_cols={m.max_grid_cols})')
  for field in ('num_clips', 'num_frames', 'eval_clips'):
    require(d[field] >= 1, f'data.{field}', f'must be >= 1, got {d[field]}')
  require(d.fps > 0, 'data.fps', f'must be > 0, got {d.fps}')
  require(3 <= d.max_text_tokens <= m.max_position_embeddings, 'data.max_text_tokens',
          f'must be in [3, model.max_position_embeddings={m.max_position_embeddings}] '
          f'(`[CLS]`, `[SEP]` and a word), got {d.max_text_tokens}')
  if m.task == clipbert_model.MATCHING:
    require(d.negatives >= 1, 'data.negatives',
            f'matching needs >= 1 negative caption per positive, got {d.negatives}')
  if m.task == clipbert_model.MULTIPLE_CHOICE:
    require(d.num_options >= 2, 'data.num_options', f'must be >= 2, got {d.num_options}')

  mlm_weight = config.loss.mlm_weight
  require(mlm_weight >= 0, 'loss.mlm_weight', f'must be >= 0 (0 = no MLM), got {mlm_weight}')
  if mlm_weight > 0:
    # The MLM term masks each video's own caption: only matching items have one.
    require(m.task == clipbert_model.MATCHING, 'loss.mlm_weight',
            f"{mlm_weight} masks captions, which only 'matching' items have; model.task is "
            f'{m.task!r}')
    require(0 < d.text_mask_rate <= 1, 'data.text_mask_rate',
            f'must be in (0, 1] with loss.mlm_weight > 0, got {d.text_mask_rate}')

  require(o.learning_rate > 0, 'optim.learning_rate', f'must be > 0, got {o.learning_rate}')
  require(o.frame_encoder_learning_rate >= 0, 'optim.frame_encoder_learning_rate',
          f'must be >= 0 (0 = the frame encoder stays fixed), got '
          f'{o.frame_encoder_learning_rate}')
  require(0 <= o.warmup_fraction < 1, 'optim.warmup_fraction',
          f'must be in [0, 1), got {o.warmup_fraction}')
  for field in ('b1', 'b2'):
    require(0 <= o[field] < 1, f'optim.{field}', f'must be in [0, 1), got {o[field]}')
  require(o.eps > 0, 'optim.eps', f'must be > 0, got {o.eps}')
  require(o.weight_decay >= 0, 'optim.weight_decay', f'must be >= 0, got {o.weight_decay}')
  require(o.grad_clip_norm > 0, 'optim.grad_clip_norm',
          f'must be > 0, got {o.grad_clip_norm}')

  b = t.global_batch_size
  checks.batch_split('train.global_batch_size', b, num_processes, b, data_parallel,
                     f'the batch of {b} videos')
  require(t.num_steps >= 1, 'train.num_steps', f'must be >= 1, got {t.num_steps}')
  checks.train_loop(t)


def data_source(config) -> str:
  """The one set field of SOURCES (its name), with the data path's fields checked."""
  d, task = config.data, config.model.task
  given = [f for f in SOURCES if d[f]]
  require(len(given) == 1, 'data.train_jsonl',
          f'set exactly one of {", ".join("data." + f for f in SOURCES)} (the training '
          f'items), got {", ".join("data." + f for f in given) or "none"}')
  if given[0] != 'train_jsonl':
    require(bool(d.video_dir), 'data.video_dir', f'data.{given[0]} needs the folder of its videos')
  if given[0] == 'train_youcook2':
    require(d.youcook2_subset in ('training', 'validation'), 'data.youcook2_subset',
            f"'training' or 'validation', got {d.youcook2_subset!r}")
  if step_lib.feature_dim(config):
    require(bool(d.get('feature_dir', '')), 'data.feature_dir',
            f'model.feature_dim={step_lib.feature_dim(config)} reads clip features: name their '
            'folder (extract-features\' output)')
  else:
    require(not d.get('feature_dir', ''), 'model.feature_dim',
            f'data.feature_dir={d.feature_dir!r} is read only with the features\' width '
            'here (S3D: 1024); 0 reads frames')
  require(d.workers >= 1, 'data.workers', f'must be >= 1, got {d.workers}')
  require(d.pool in ('thread', 'process'), 'data.pool',
          f"'thread' or 'process', got {d.pool!r}")
  require(d.normalization in data_lib.NORMALIZATIONS, 'data.normalization',
          f'one of {sorted(data_lib.NORMALIZATIONS)}, got {d.normalization!r}')
  require(d.min_duration >= 0, 'data.min_duration', f'must be >= 0, got {d.min_duration}')
  if task == clipbert_model.MATCHING:
    # BatchBuilder pairs each caption with one other caption of the batch.
    require(d.negatives == 1, 'data.negatives',
            f'the video data path draws 1 negative caption per positive, got {d.negatives}')
  require(task != clipbert_model.QA or bool(d.train_jsonl), 'data.train_jsonl',
          "'qa' trains on open-ended items, which only a jsonl holds")
  return given[0]


def items(config, found: Sequence[data_lib.Item], source: str) -> None:
  """The items read from `source` against the config: their kind, options and number.

  Raises:
    ConfigError: a task other than the items' kind, another number of options,
      a batch larger than the items (naming the field).
    DataError: no items (naming the file).
  """
  if not found:
    raise DataError(f'{source}: no item whose video is in the video folder '
                    f'(config.data.video_dir={config.data.video_dir!r})')
  kind, task = found[0].kind, config.model.task
  require(kind == task, 'model.task', f'{task!r}, but {source} holds {kind!r} items')
  if task == clipbert_model.MULTIPLE_CHOICE:
    counts = sorted({len(item.options) for item in found})
    require(counts == [config.data.num_options], 'data.num_options',
            f'{config.data.num_options}, but the items of {source} have {counts} options')
  b = config.train.global_batch_size
  require(b <= len(found), 'train.global_batch_size',
          f'{b} distinct items a batch, but {source} has {len(found)} with a video')


def readable_video(found: Sequence[data_lib.Item], source: str) -> None:
  """Probes the items' videos in order until one opens; DataError when none does.

  Stops at the first readable one, so a good list costs one probe: the other
  bad videos are found (and skipped) as batches draw them. An image is
  decoded instead of probed (it has no packets to read).
  """
  tried, first_error = set(), None
  for item in found:
    if item.video in tried:
      continue
    tried.add(item.video)
    if data_lib.is_image(item.video):
      try:
        data_lib.load_image(item.video)
        return
      except DataError as e:
        first_error = first_error or str(e)
        continue
    info, error = frames_lib.probe_or_error(item.video)
    if info is not None:
      return
    first_error = first_error or error
  raise DataError(f'{source}: none of its {len(tried)} videos is readable (the first: '
                  f'{first_error})')


def vocabulary(config, vocab_size: int, vocab_file: str, table_rows: int) -> None:
  """The WordPiece vocabulary fits the model's word table of `table_rows`."""
  require(vocab_size <= table_rows, 'data.vocab_file',
          f'{vocab_file} has {vocab_size} WordPieces, more than the word table '
          f'({table_rows} rows: model.text_vocab_size, or model.text_checkpoint\'s)')
