"""Training and running the captioner: caption ids, batches, step, checkpoints, decoding.

  train(config, features, sentences, workdir)   teacher-forced cross-entropy, Adam
                                                with linear decay, on the training
                                                loop (vlm_jax.train.loop): resumes
                                                from the latest checkpoint in workdir
  load(workdir) -> Trained; captions(trained, features) -> greedy captions

One device and all the data in memory: a segment's feature is a few KiB and
YouCook2 has about 10k training segments. The batch of a step depends only on
(seed, step), so a resumed run sees the same batches as an uninterrupted one.
Features are standardised per dimension with the training set's mean and
spread, kept in the workdir's model.json for captioning new segments. The
workdir may be a local path or a URL (gs://bucket/run).
"""

import dataclasses
import functools
import itertools
import json
import os
from typing import Any, Callable, ClassVar, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tensorflow as tf
import tqdm
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vlm_jax.captioning import model as captioner_lib
from vlm_jax.data import tokenizer as tokenizer_lib
from vlm_jax.train import checkpoints, loop, optim, partitioning, report

MODEL_FILE = 'model.json'
TrainState = partitioning.TrainState


@dataclasses.dataclass(frozen=True)
class CaptionVocab:
  """The WordPieces the captioner reads and writes: its training captions' and four specials.

  Local id i stands for BERT id `bert_ids[i]`; 0..3 are `[PAD]`, `[UNK]`,
  `[CLS]` (start) and `[SEP]` (end). A few thousand rows instead of BERT's
  30,522 make the output softmax, and so training and decoding, several
  times cheaper; the model could not learn to write an unseen piece anyway.
  """
  bert_ids: tuple[int, ...]
  pad: ClassVar[int] = 0
  unk: ClassVar[int] = 1
  bos: ClassVar[int] = 2
  eos: ClassVar[int] = 3

  @classmethod
  def build(cls, tok, pieces: Sequence[Sequence[int]]) -> 'CaptionVocab':
    specials = [tok.token_to_id(t) for t in ('[PAD]', '[UNK]', '[CLS]', '[SEP]')]
    seen = sorted({int(i) for p in pieces for i in p} - set(specials))
    return cls(tuple(specials + seen))

  @property
  def size(self) -> int:
    return len(self.bert_ids)

  def local_ids(self, bert_ids: Sequence[int]) -> list[int]:
    index = {b: i for i, b in enumerate(self.bert_ids)}
    return [index.get(int(b), self.unk) for b in bert_ids]

  def text(self, tok, local_ids: Sequence[int]) -> str:
    """A caption from generated local ids: up to the first end token, pieces joined."""
    ids = [int(i) for i in local_ids]
    if self.eos in ids:
      ids = ids[:ids.index(self.eos)]
    return tok.decode([self.bert_ids[i] for i in ids], skip_special_tokens=True)


def caption_arrays(vocab: CaptionVocab, pieces: Sequence[Sequence[int]],
                   max_len: int) -> dict[str, np.ndarray]:
  """Teacher-forcing arrays of captions (BERT WordPiece ids), each [N, max_len] int32.

  `inputs` is `[CLS] pieces`, `targets` is `pieces [SEP]` (local ids) and
  `weights` is 1 where a target is real; pieces beyond max_len - 1 are cut
  (the end token stays).
  """
  n = len(pieces)
  inputs = np.full((n, max_len), vocab.pad, np.int32)
  targets = np.full((n, max_len), vocab.pad, np.int32)
  weights = np.zeros((n, max_len), np.float32)
  for row, caption in enumerate(pieces):
    local = vocab.local_ids(caption[:max_len - 1])
    inputs[row, :len(local) + 1] = [vocab.bos, *local]
    targets[row, :len(local) + 1] = [*local, vocab.eos]
    weights[row, :len(local) + 1] = 1
  return dict(inputs=inputs, targets=targets, weights=weights)


def batch_indices(num_examples: int, batch_size: int, step: int, seed: int) -> np.ndarray:
  """[batch_size] example indices of 1-based `step`: epochs of seeded permutations.

  Step s takes positions (s - 1) * batch_size .. s * batch_size - 1 of the
  endless sequence perm(epoch 0), perm(epoch 1), ..., each epoch's permutation
  drawn from (seed, epoch).
  """
  positions = np.arange((step - 1) * batch_size, step * batch_size)
  epochs, offsets = np.divmod(positions, num_examples)
  out = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs):
    perm = np.random.default_rng([seed, int(epoch)]).permutation(num_examples)
    where = epochs == epoch
    out[where] = perm[offsets[where]]
  return out


def encoder_inputs(features: np.ndarray, max_inputs: int) -> tuple[np.ndarray, np.ndarray]:
  """Segment features as padded encoder sequences [N, max_inputs, D] and masks [N, max_inputs].

  [N, D] features (one vector per segment) become sequences of one; [N, L, D]
  sequences are padded to max_inputs.
  """
  features = np.asarray(features, np.float32)
  if features.ndim == 2:
    features = features[:, None]
  if features.shape[1] > max_inputs:
    raise ValueError(f'{features.shape[1]} inputs per segment exceed '
                     f'config.model.max_inputs={max_inputs}')
  pad = max_inputs - features.shape[1]
  mask = np.pad(np.ones(features.shape[:2], np.float32), ((0, 0), (0, pad)))
  return np.pad(features, ((0, 0), (0, pad), (0, 0))), mask


def standardize(features: np.ndarray, mask: np.ndarray, mean: np.ndarray,
                std: np.ndarray) -> np.ndarray:
  """Per-dimension z-scores of [N, L, D] encoder inputs; padded positions stay 0."""
  return ((features - mean) / std * mask[..., None]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Built:
  model: captioner_lib.Captioner
  mesh: Mesh  # one device
  create_state: Callable[[jax.Array], TrainState]  # rng -> step-0 state
  train_step: Callable[[TrainState, dict], tuple[TrainState, dict]]
  abstract_state: TrainState  # ShapeDtypeStructs on the one device
  decode: Callable[[Any, np.ndarray, np.ndarray], jax.Array]  # greedy, [batch, length]


def _build(config, feature_dim: int, vocab_size: int) -> _Built:
  """The model and its jitted functions; built once per shape and optimizer in a process."""
  model_config = captioner_lib.CaptionerConfig.from_config(config.model, feature_dim, vocab_size)
  # 'rbg' unless the config says otherwise: on one device its masks need not be the
  # same under every sharding, and it compiles several times faster than threefry on
  # CPU. The config.json of a run from before train.dropout_rng existed lacks the field.
  return _build_cached(model_config, config.optim.to_json(), config.train.num_steps,
                       config.seed, config.train.get('dropout_rng', 'rbg'))


# Compiling dominates a small run on CPU: a resumed run, or one in a process that
# already trained the same shape, reuses the executables.
@functools.lru_cache(maxsize=4)
def _build_cached(model_config: captioner_lib.CaptionerConfig, optim_json: str, num_steps: int,
                  seed: int, dropout_rng: str) -> _Built:
  model = captioner_lib.Captioner(model_config)
  tx, schedule = optim.make(ml_collections.ConfigDict(json.loads(optim_json)), num_steps)
  inputs, length = model_config.max_inputs, model_config.max_caption_len

  def create_state(rng):
    params = model.init(rng, jnp.zeros((1, inputs, model_config.feature_dim)),
                        jnp.ones((1, inputs)), jnp.zeros((1, length), jnp.int32))['params']
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))

  def train_step(state, batch):
    rng = jax.random.fold_in(jax.random.key(seed, impl=dropout_rng), state.step)

    def loss_fn(params):
      logits = model.apply({'params': params}, batch['features'], batch['feature_mask'],
                           batch['inputs'], deterministic=False, rngs={'dropout': rng})
      return captioner_lib.caption_loss(logits, batch['targets'], batch['weights'])

    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(loss=loss, accuracy=accuracy, l2_grads=optax.tree.norm(grads),
                   learning_rate=schedule(state.step))
    return TrainState(state.step + 1, params, opt_state), metrics

  def decode(params, features, feature_mask):
    return captioner_lib.greedy_decode(model, params, features, feature_mask, CaptionVocab.bos,
                                       length)

  mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), partitioning.MESH_AXES)
  device = NamedSharding(mesh, PartitionSpec())
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          jax.eval_shape(create_state, jax.random.key(0)))
  step = jax.jit(train_step, in_shardings=(device, partitioning.batch_sharding(mesh)),
                 out_shardings=(device, None), donate_argnums=0)
  return _Built(model, mesh, jax.jit(create_state, out_shardings=device), step, abstract,
                jax.jit(decode))


def train(config: ml_collections.ConfigDict, features: np.ndarray, sentences: Sequence[str],
          workdir: str, progress: bool = True, stop_at: int | None = None) -> dict[str, Any]:
  """Trains the captioner on (feature, caption) pairs until config.train.num_steps.

  Args:
    config: configs/captioner.py's config.
    features: [N, D] segment features (or [N, L, D] sequences of L <= max_inputs).
    sentences: N reference captions.
    workdir: a local path or a URL; checkpoints/, metrics.jsonl, config.json, model.json
      and manifest.json go here.
    progress: show a tqdm bar.
    stop_at: stop (with a checkpoint) after this step instead, as if interrupted.

  Returns:
    The last logged metrics (mean loss and accuracy since the previous log).
  """
  if len(features) != len(sentences) or not len(sentences):
    raise ValueError(f'{len(features)} features for {len(sentences)} captions')
  workdir = loop.make_workdir(workdir)
  tok = tokenizer_lib.load(config.vocab_file)
  features, feature_mask = encoder_inputs(features, config.model.max_inputs)
  feature_dim = features.shape[-1]
  # Segments' features differ from one another far less than from zero (cosine
  # ~0.99 for S3D): standardising with the training statistics brings out what
  # tells them apart.
  real = features[feature_mask > 0]
  mean, std = real.mean(0), np.maximum(real.std(0), 1e-6)
  features = standardize(features, feature_mask, mean, std)
  pieces = tokenizer_lib.wordpieces(tok, list(sentences))
  vocab = CaptionVocab.build(tok, pieces)
  captions = caption_arrays(vocab, pieces, config.model.max_caption_len)
  built = _build(config, feature_dim, vocab.size)
  with tf.io.gfile.GFile(os.path.join(workdir, MODEL_FILE), 'w') as f:
    json.dump({'feature_dim': feature_dim, 'bert_ids': vocab.bert_ids,
               'feature_mean': mean.tolist(), 'feature_std': std.tolist()}, f)

  def batches(state, start):  # pylint: disable=unused-argument
    """Host batches [batch_size, ...] of steps start + 1, ...: rows drawn from (seed, step)."""
    for step in itertools.count(start + 1):
      rows = batch_indices(len(features), config.train.batch_size, step, config.seed)
      yield dict(features=features[rows], feature_mask=feature_mask[rows],
                 **{k: v[rows] for k, v in captions.items()})

  run = loop.Run(
      mesh=built.mesh, abstract_state=built.abstract_state,
      create_state=lambda: built.create_state(jax.random.key(config.seed)),
      train_step=built.train_step, num_steps=config.train.num_steps, batches=batches,
      examples_per_step=config.train.batch_size,
      manifest={'command': 'caption train', 'examples': len(sentences),
                'caption_vocab_size': vocab.size, 'feature_dim': feature_dim},
      name='caption-train')
  return loop.train(config, workdir, run, stop_at=stop_at, progress=progress)


@dataclasses.dataclass
class Trained:
  config: ml_collections.ConfigDict
  tokenizer: Any
  vocab: CaptionVocab
  built: _Built
  params: Any
  step: int
  feature_mean: np.ndarray  # [D] training statistics the inputs are standardised with
  feature_std: np.ndarray  # [D]


def load(workdir: str) -> Trained:
  """The captioner of a `train` workdir (local or a URL) at its latest checkpoint.

  Only the parameters are read, not the optimizer's moments.
  """
  model_file = os.path.join(workdir, MODEL_FILE)
  if not tf.io.gfile.exists(model_file):
    raise FileNotFoundError(f'{workdir} is not a captioner workdir (needs {MODEL_FILE})')
  config = report.read_config(workdir)
  with tf.io.gfile.GFile(model_file) as f:
    shape = json.load(f)
  tok = tokenizer_lib.load(config.vocab_file)
  vocab = CaptionVocab(tuple(shape['bert_ids']))
  built = _build(config, shape['feature_dim'], vocab.size)
  params, step = checkpoints.restore_params(workdir, built.abstract_state.params)
  return Trained(config, tok, vocab, built, params, step,
                 np.asarray(shape['feature_mean'], np.float32),
                 np.asarray(shape['feature_std'], np.float32))


def captions(trained: Trained, features: np.ndarray, progress: bool = False) -> list[str]:
  """Greedy captions of [N, D] segment features (or [N, L, D] sequences)."""
  config = trained.config
  features, feature_mask = encoder_inputs(features, config.model.max_inputs)
  features = standardize(features, feature_mask, trained.feature_mean, trained.feature_std)
  batch_size = config.decode.batch_size
  out = []
  for start in tqdm.trange(0, len(features), batch_size, desc='caption-predict',
                           disable=not progress):
    # Fixed shapes ([batch_size, ...]): one compilation for every chunk.
    chunk = slice(start, start + batch_size)
    n = len(features[chunk])
    x = np.zeros((batch_size,) + features.shape[1:], np.float32)
    m = np.zeros((batch_size,) + feature_mask.shape[1:], np.float32)
    x[:n], m[:n] = features[chunk], feature_mask[chunk]
    # Padding rows get one unmasked input so their attention stays finite.
    m[n:, 0] = 1
    ids = np.asarray(trained.built.decode(trained.params, x, m))[:n]
    out.extend(trained.vocab.text(trained.tokenizer, row) for row in ids)
  return out
