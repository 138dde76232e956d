"""VideoBERT's visual tokens: hierarchical k-means over clip features.

VideoBERT (Sun et al., 2019) tokenises video by clustering S3D clip features
with hierarchical k-means: 4 levels of k = 12, giving 12^4 = 20,736 leaves, each
leaf a visual token. `build` fits the tree, `assign` maps features to leaf ids
by descending it, and `Codebook.save` / `Codebook.load` keep it in one .npz.

Tree layout: level l (0-based) has k**(l+1) centroids in breadth-first order,
so the children of node i at level l are rows i*k .. i*k+k-1 of level l+1, and
a leaf id is the row of the last level (vocab.JointVocab.visual_id adds the
joint-vocabulary offset).

Two options trade a little speed for a lower quantisation error (see
benchmarks/RESULTS.md): a beam descent (`beam` > 1 keeps the `beam` nearest
nodes of each level instead of one, so a point near a border still reaches
its nearest leaf) and `refine_rounds` of Lloyd updates over the whole tree
(every centroid becomes the mean of the points whose leaf lies under it).
The beam is stored with the codebook, so every later assignment descends the
tree the way it was fitted.

`list_features` / `load_features` read the per-video `<video_id>.npy`
[num_clips, D] feature files shared by build-codebook and assign-tokens.
"""

import dataclasses
import io
from typing import Optional, Sequence

import faiss
import numpy as np

from vlm_jax.data import files as files_lib
from vlm_jax.data import storage


@dataclasses.dataclass
class Codebook:
  """A complete hierarchical k-means tree.

  Attributes:
    centroids_per_level: `levels` float32 arrays; level l is [k**(l+1), D],
      breadth-first (children of node i at level l are rows i*k .. i*k+k-1 of
      level l+1).
    levels: depth of the tree.
    k: branching factor.
    nearest_clip: [k**levels] int64; for each leaf, the training clip (its row
      in the features given to `build`, or its entry of `clip_ids`) nearest the
      leaf centroid among the clips `assign` maps to that leaf; -1 for a leaf
      no training clip reaches.
    extras: more arrays saved with the codebook (e.g. the command line's
      `nearest_video_id` / `nearest_clip_index`); names must not clash with
      the fixed keys.
    beam: nodes kept per level when descending (1: the greedy descent).
  """
  centroids_per_level: list[np.ndarray]
  levels: int
  k: int
  nearest_clip: np.ndarray
  extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  beam: int = 1

  @property
  def leaf_centroids(self) -> np.ndarray:
    """[k**levels, D] float32: the last level; row = visual token id."""
    return self.centroids_per_level[-1]

  @property
  def num_leaves(self) -> int:
    return self.k**self.levels

  @property
  def dim(self) -> int:
    return self.leaf_centroids.shape[1]

  def save(self, path: str) -> None:
    """Writes one .npz (atomically: a partial file never has the final name).

    Keys: `leaf_centroids` [k**levels, D], `centroids_level_<l>` for the upper
    levels l < levels - 1, `nearest_clip`, `levels`, `k`, `beam`, and the extras.
    """
    arrays = {f'centroids_level_{l}': c for l, c in enumerate(self.centroids_per_level[:-1])}
    arrays.update(leaf_centroids=self.leaf_centroids, nearest_clip=self.nearest_clip,
                  levels=np.int64(self.levels), k=np.int64(self.k), beam=np.int64(self.beam))
    clash = set(arrays) & set(self.extras)
    if clash:
      raise ValueError(f'extras clash with codebook keys: {sorted(clash)}')
    arrays.update(self.extras)
    # In memory first: the zip writer seeks back, which a Cloud Storage upload
    # cannot (and np.savez would append '.npz' to a file name that lacks it).
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with files_lib.atomic_path(path) as tmp, storage.open_file(tmp, 'wb') as f:
      f.write(buffer.getvalue())

  @classmethod
  def load(cls, path: str) -> 'Codebook':
    """The codebook `save` wrote to `path` (a local path or a URL)."""
    if storage.is_url(path):
      with storage.open_file(path, 'rb') as f:
        path = io.BytesIO(f.read())  # the zip reader seeks back and forth
    with np.load(path, allow_pickle=False) as data:
      levels, k = int(data['levels']), int(data['k'])
      # Codebooks saved before the beam option descended greedily.
      beam = int(data['beam']) if 'beam' in data.files else 1
      centroids = [data[f'centroids_level_{l}'] for l in range(levels - 1)]
      centroids.append(data['leaf_centroids'])
      fixed = {f'centroids_level_{l}' for l in range(levels - 1)}
      fixed |= {'leaf_centroids', 'nearest_clip', 'levels', 'k', 'beam'}
      extras = {name: data[name] for name in data.files if name not in fixed}
      codebook = cls(centroids, levels, k, data['nearest_clip'], extras, beam)
    for l, c in enumerate(codebook.centroids_per_level):
      if c.shape[0] != k**(l + 1):
        raise ValueError(f'{path}: level {l} has {c.shape[0]} centroids, expected {k**(l + 1)}')
    return codebook


def _child_scores(x: np.ndarray, children: np.ndarray, children_sq: np.ndarray) -> np.ndarray:
  """[m, k] squared distances of `x` [m, D] to `children` [k, D], less ||x||^2.

  ||x||^2 is the same for every child of a point, so it is left out; build and
  assign share this function so that they never disagree on a near tie.
  """
  return children_sq[None, :] - 2.0 * (x @ children.T)


def _nearest_child(x: np.ndarray, children: np.ndarray, children_sq: np.ndarray) -> np.ndarray:
  """Index of the nearest row of `children` [k, D] for each row of `x` [m, D]."""
  return np.argmin(_child_scores(x, children, children_sq), axis=1)


def _node_seed(seed: int, level: int, node: int) -> int:
  # A distinct, reproducible faiss/NumPy seed per node; faiss takes an int32.
  return (seed * 1_000_003 + level * 100_003 + node) % (2**31 - 1)


def _kmeans_pp(points: np.ndarray, k: int, seed: int) -> np.ndarray:
  """k-means++ seeds: k rows of `points` [m >= k, D].

  Each row after a uniform first is drawn with probability proportional to
  its squared distance to the nearest row already drawn, which spreads the
  seeds over the node's points. Not the default: on benchmarks/codebook.py's
  clustered data it gave no lower leaf error than faiss' random seeds (it
  favours outliers); best-of-nredo runs did.
  """
  rng = np.random.default_rng(seed)
  sq = np.einsum('md,md->m', points, points, dtype=np.float64)
  chosen = [int(rng.integers(len(points)))]
  dist = np.full(len(points), np.inf)
  for _ in range(1, k):
    last = points[chosen[-1]]
    dist = np.minimum(dist, np.maximum(sq - 2.0 * (points @ last) + sq[chosen[-1]], 0.0))
    total = dist.sum()
    # All remaining points coincide with a chosen one: any row will do.
    chosen.append(int(rng.choice(len(points), p=dist / total)) if total > 0
                  else int(rng.integers(len(points))))
  return points[chosen]


class _FaissThreads:
  """Sets faiss' OpenMP threads for a block, then restores them.

  A node's k-means (k = 12 centroids) is far too small to split across
  threads: with 2 threads on a busy machine faiss spent 0.1 to 0.3 s per
  node in thread synchronisation (13x to 300x the single-threaded time).
  """

  def __init__(self, threads: int):
    self._threads = threads

  def __enter__(self):
    self._saved = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(self._threads)

  def __exit__(self, *unused):
    faiss.omp_set_num_threads(self._saved)


def _fit_children(points: np.ndarray, parent: np.ndarray, k: int, niter: int,
                  seed: int, init: str = 'random', nredo: int = 1) -> np.ndarray:
  """k child centroids [k, D] float32 for a node holding `points` [m, D].

  With m >= k: faiss k-means over all m points, started from faiss' own k
  random points (init='random') or from k-means++ seeds (init='kmeans++');
  with nredo > 1, the best (lowest final k-means objective) of nredo runs
  from different seeds, the first run being the nredo = 1 one. With
  m < k (faiss refuses fewer points than centroids): child j is an exact copy
  of point j mod m, or of the parent centroid when m == 0, so the tree stays
  complete. Each point then sits on a child of its own (distance 0), and
  exact copies tie, so argmin gives every point and every later query the
  first of them: copies past the first are unreachable tokens. No jitter, on
  purpose: jittered copies would be near ties that float32 and float64
  descents could break differently.
  """
  m, dim = points.shape
  if m >= k:
    points = np.ascontiguousarray(points, np.float32)
    best, best_obj = None, np.inf
    # Our own restarts rather than faiss' nredo, which would start every run
    # from the same given k-means++ seeds.
    for redo in range(nredo):
      run_seed = (seed + redo * 15_485_863) % (2**31 - 1)
      kmeans = faiss.Kmeans(
          dim, k, niter=niter, seed=run_seed, verbose=False,
          # faiss silently subsamples to max_points_per_centroid * k points, and
          # warns below min_points_per_centroid * k: use every point, no warning.
          max_points_per_centroid=-(-m // k), min_points_per_centroid=1)
      if init == 'kmeans++':
        kmeans.train(points, init_centroids=_kmeans_pp(points, k, run_seed))
      else:
        kmeans.train(points)
      if kmeans.obj[-1] < best_obj:  # strictly lower: ties keep the earlier run
        best, best_obj = kmeans.centroids, kmeans.obj[-1]
    return best.astype(np.float32)
  if m == 0:
    return np.repeat(parent[None].astype(np.float32), k, axis=0)
  return points[np.arange(k) % m].astype(np.float32)


def _groups(node: np.ndarray):
  """Yields (node id, row indices) for each distinct value of `node` [n]."""
  order = np.argsort(node, kind='stable')
  values, starts = np.unique(node[order], return_index=True)
  ends = np.append(starts[1:], len(order))
  for value, start, end in zip(values, starts, ends):
    yield int(value), order[start:end]


def build(features: np.ndarray, levels: int = 4, k: int = 12,
          sample_size: Optional[int] = None, seed: int = 0, niter: int = 20,
          clip_ids: Optional[Sequence[int]] = None, init: str = 'random',
          nredo: int = 1, beam: int = 1, refine_rounds: int = 0) -> Codebook:
  """Fits a hierarchical k-means tree of `levels` levels and branching `k`.

  Level 1 clusters all (sampled) points into k; each node's points are then
  clustered into its k children, down to `levels`. Points move down the tree
  by nearest child, as `assign` descends it with beam 1; then `refine_rounds`
  Lloyd rounds let the whole tree follow the (beam) descent. A node with fewer than k
  points (possibly none) gets deterministic filler children (copies of its
  points, or of its centroid; see `_fit_children`), so the tree always has
  k**levels leaves. Deterministic for a given seed (faiss k-means
  with a per-node seed). Each node's k-means runs single-threaded (see
  `_FaissThreads`).

  Args:
    features: [N, D] clip features (cast to float32).
    levels: depth of the tree (VideoBERT: 4).
    k: branching factor (VideoBERT: 12).
    sample_size: cluster a uniform random sample of this many rows (without
      replacement, seeded) instead of all N; None or >= N uses all.
    seed: seeds the sample and every node's k-means.
    niter: k-means iterations per node.
    clip_ids: [N] int ids of the rows, reported in `nearest_clip` instead of
      row indices.
    init: each node's k-means starts from 'random' (faiss' own: k random
      points) or 'kmeans++' seeds.
    nredo: k-means runs per node (different seeds), keeping the one with the
      lowest objective; lowers the quantisation error, costs nredo times the
      k-means time.
    beam: nodes kept per level by `assign` (saved with the codebook); 1 is
      the greedy descent.
    refine_rounds: Lloyd rounds over the whole fitted tree (see `refine`).

  Returns:
    The Codebook; `nearest_clip` refers to the clustered (sampled) rows.
  """
  features = np.asarray(features)
  if features.ndim != 2 or features.shape[0] == 0:
    raise ValueError(f'features must be [N, D] with N > 0, got {features.shape}')
  if levels < 1 or k < 2:
    raise ValueError(f'need levels >= 1 and k >= 2, got levels={levels}, k={k}')
  if init not in ('kmeans++', 'random'):
    raise ValueError(f"init must be 'kmeans++' or 'random', got {init!r}")
  if nredo < 1:
    raise ValueError(f'need nredo >= 1, got {nredo}')
  if beam < 1 or refine_rounds < 0:
    raise ValueError(f'need beam >= 1 and refine_rounds >= 0, got {beam} and {refine_rounds}')
  if clip_ids is not None:
    clip_ids = np.asarray(clip_ids, np.int64)
    if clip_ids.shape != (features.shape[0],):
      raise ValueError(f'clip_ids {clip_ids.shape} does not match features {features.shape}')
  rows = np.arange(features.shape[0])
  if sample_size is not None and sample_size < len(rows):
    rows = np.sort(np.random.default_rng(seed).choice(len(rows), sample_size, replace=False))
  points = np.ascontiguousarray(features[rows], np.float32)

  centroids_per_level = []
  parents = points.mean(axis=0, keepdims=True)  # the root, for filler children
  node = np.zeros(len(points), np.int64)  # each point's node at the level above
  for level in range(levels):
    num_parents = k**level
    children = np.empty((num_parents * k, points.shape[1]), np.float32)
    filled = np.zeros(num_parents, bool)
    next_node = np.empty_like(node)
    for parent, members in _groups(node):
      with _FaissThreads(1):
        c = _fit_children(points[members], parents[parent], k, niter,
                          _node_seed(seed, level, parent), init, nredo)
      children[parent * k:(parent + 1) * k] = c
      filled[parent] = True
      next_node[members] = parent * k + _nearest_child(
          points[members], c, np.einsum('kd,kd->k', c, c))
    for parent in np.flatnonzero(~filled):  # nodes no point reached
      children[parent * k:(parent + 1) * k] = _fit_children(
          points[:0], parents[parent], k, niter, _node_seed(seed, level, parent))
    centroids_per_level.append(children)
    parents, node = children, next_node

  codebook = Codebook(centroids_per_level, levels, k, np.full(k**levels, -1, np.int64),
                      beam=beam)
  for _ in range(refine_rounds):
    refine(codebook, points)
  # From the descent `assign` uses, so that each nearest clip provably maps to its leaf.
  leaf = _descend_batches(codebook, points)
  dist = np.einsum('nd,nd->n', points - codebook.leaf_centroids[leaf],
                   points - codebook.leaf_centroids[leaf])
  order = np.lexsort((dist, leaf))  # by leaf, then by distance
  first = np.unique(leaf[order], return_index=True)[1]
  best = rows[order[first]]
  codebook.nearest_clip[leaf[order[first]]] = clip_ids[best] if clip_ids is not None else best
  return codebook


def refine(codebook: Codebook, points: np.ndarray, batch_size: int = 65536) -> None:
  """One Lloyd round over the whole tree, in place.

  Every point of `points` [N, D] (in the codebook's space: standardised if it
  was) descends to its leaf with the codebook's beam; then every centroid of
  every level moves to the mean of the points whose leaf lies under it. A node
  no point reaches keeps its centroid. The tree's k-means fits each node to
  the points its parent's greedy descent sent it; this lets leaves and their
  parents follow the points the descent really delivers.
  """
  k, dim = codebook.k, codebook.dim
  points = np.asarray(points, np.float32)
  leaf = _descend_batches(codebook, points, batch_size)
  sums = np.zeros((codebook.num_leaves, dim), np.float64)
  for start in range(0, len(points), batch_size):
    part = leaf[start:start + batch_size]
    order = np.argsort(part, kind='stable')
    values, first = np.unique(part[order], return_index=True)
    # float32 partial sums (a float64 reduceat was slower than the descent itself).
    sums[values] += np.add.reduceat(points[start:start + batch_size][order], first, axis=0)
  counts = np.bincount(leaf, minlength=codebook.num_leaves)
  for level in reversed(range(codebook.levels)):
    if level < codebook.levels - 1:
      sums, counts = sums.reshape(-1, k, dim).sum(axis=1), counts.reshape(-1, k).sum(axis=1)
    reached = counts > 0
    codebook.centroids_per_level[level][reached] = sums[reached] / counts[reached, None]


def assign(codebook: Codebook, features: np.ndarray, batch_size: int = 65536) -> np.ndarray:
  """Leaf ids [N] int64 of `features` [N, D] by descending the tree.

  At each level a point moves to the nearest of the k children of its current
  node (with `codebook.beam` > 1: the beam nearest of the children of the
  nodes kept so far, the leaf being the nearest at the last level): this is
  the tree descent that defines VideoBERT's tokens, not the flat nearest of
  all k**levels leaves (which can differ near cluster borders). Per batch,
  points are grouped by node so each level is one small matrix product per
  node: memory O(batch_size * beam * (D + k)).
  """
  features = np.asarray(features)
  if features.ndim != 2 or features.shape[1] != codebook.dim:
    raise ValueError(f'features must be [N, {codebook.dim}], got {features.shape}')
  return _descend_batches(codebook, standardized(codebook, features), batch_size)


def _descend_batches(codebook: Codebook, x: np.ndarray, batch_size: int = 65536) -> np.ndarray:
  sq = [np.einsum('kd,kd->k', c, c) for c in codebook.centroids_per_level]
  out = np.empty(x.shape[0], np.int64)
  for start in range(0, x.shape[0], batch_size):
    out[start:start + batch_size] = _descend(
        codebook, np.ascontiguousarray(x[start:start + batch_size], np.float32), sq)
  return out


def _descend(codebook: Codebook, x: np.ndarray, sq: list[np.ndarray]) -> np.ndarray:
  """Leaf ids [m] of `x` [m, D]; `sq` holds each level's squared centroid norms."""
  k, m = codebook.k, len(x)
  nodes = np.zeros((m, 1), np.int64)  # [m, kept] per point, nearest first
  for centroids, centroid_sq in zip(codebook.centroids_per_level, sq):
    kept = nodes.shape[1]
    flat = nodes.reshape(-1)
    point = np.repeat(np.arange(m), kept)
    scores = np.empty((m * kept, k), np.float32)
    for parent, members in _groups(flat):
      span = slice(parent * k, (parent + 1) * k)
      scores[members] = _child_scores(x[point[members]], centroids[span], centroid_sq[span])
    children = (flat[:, None] * k + np.arange(k)).reshape(m, kept * k)
    scores = scores.reshape(m, kept * k)
    if codebook.beam == 1:
      nodes = np.take_along_axis(children, np.argmin(scores, axis=1)[:, None], axis=1)
    else:
      # Stable: equal scores keep the nearer parent's child, then the lower index.
      order = np.argsort(scores, axis=1, kind='stable')[:, :codebook.beam]
      nodes = np.take_along_axis(children, order, axis=1)
  return nodes[:, 0]


def standardized(codebook: Codebook, features: np.ndarray) -> np.ndarray:
  """`features` [N, D] in the space the tree was fitted in.

  A codebook built from standardised features (build-codebook --standardize)
  carries the training features' per-dimension `feature_mean` and
  `feature_scale` as extras; others are used as they are.
  """
  if 'feature_mean' not in codebook.extras:
    return features
  return ((np.asarray(features, np.float32) - codebook.extras['feature_mean'])
          / codebook.extras['feature_scale'])


# Feature files: one <video_id>.npy [num_clips, D] per video.


def list_features(folder: str) -> list[str]:
  """Sorted `.npy` file names in `folder`, without extract-features' `*.times.npy`."""
  if not storage.isdir(folder):
    raise FileNotFoundError(f'{folder}: not a folder')
  return sorted(n for n in storage.listdir(folder)
                if n.endswith('.npy') and not n.endswith(files_lib.TIMES_SUFFIX))


def _check_shape(shape: tuple[int, ...], dtype: np.dtype, dim: Optional[int]) -> None:
  if len(shape) != 2:
    raise ValueError(f'expected [num_clips, D], got shape {shape}')
  if dtype not in (np.float16, np.float32):
    raise ValueError(f'expected float16 or float32, got {dtype}')
  if dim is not None and shape[1] != dim:
    raise ValueError(f'expected D = {dim}, got {shape[1]}')
  if shape[0] == 0:
    raise ValueError('no clips')


def feature_shape(path: str, dim: Optional[int]) -> tuple[int, int]:
  """(num_clips, D) of a feature file from its header alone; ValueError as `load_features`.

  The values are not read, so non-finite ones go unnoticed here.
  """
  try:
    shape, dtype, _ = storage.npy_header(path)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'unreadable: {type(e).__name__}: {e}') from e
  _check_shape(shape, dtype, dim)
  return shape[0], shape[1]


def load_features(path: str, dim: Optional[int]) -> np.ndarray:
  """A [num_clips, D] feature file, memory-mapped (read, from a URL); ValueError if unusable."""
  try:
    array = storage.load_npy(path, mmap=True)
  except Exception as e:  # pylint: disable=broad-except
    # np.load raises ValueError, OSError, EOFError, ... on a corrupt file.
    raise ValueError(f'unreadable: {type(e).__name__}: {e}') from e
  if not isinstance(array, np.ndarray):
    raise ValueError(f'expected [num_clips, D], got a {type(array).__name__}')
  _check_shape(array.shape, array.dtype, dim)
  if not np.isfinite(array).all():
    raise ValueError('non-finite values')
  return array
