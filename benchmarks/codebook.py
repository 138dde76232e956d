"""Hierarchical k-means (VideoBERT's visual tokens) against flat k-means.

  python benchmarks/codebook.py --n 200000 --d 1024 --levels 4 --k 12 --niter 10  # issue 3
  python benchmarks/codebook.py --n 50000 --d 128 --levels 3 --k 12   # small
  python benchmarks/codebook.py --features_dir DIR --n 200000 ...     # real features
  python benchmarks/codebook.py --d 1024 --levels 4 --k 12 --niter 10 --heldout_n 20000 \
      --sample_sizes 25000,50000,100000,200000,400000   # issue 19: how big a sample

On one sample fits vlm_jax.videobert.codebook.build (a tree of `levels` levels, k
per node, k**levels leaves) and one flat faiss k-means with k**levels
centroids, both with the same `niter` and faiss told to use every point
(max_points_per_centroid), then times assignment of the whole sample (tree
descent vs exhaustive faiss IndexFlatL2 search over the flat centroids) and
prints a Markdown table: build seconds, assignment throughput, the mean
squared quantisation error over the sample, and ratios against flat. The tree
rows also give the error of the flat nearest of their own leaves (on a
subsample, --flat_nearest_n), i.e. what the greedy descent costs.

--tree_variants names build() settings to compare in the same run (the flat
k-means, by far the slowest part, is fitted once): `default` is build() as
it is (each node's k-means starts from faiss' k random points), `kmeans++`
starts them from k-means++ seeds, `nredoR` keeps the best of R k-means runs
per node, `beam4` descends with a beam of 4 nodes per level and
`beam4_refine2` also refines the fitted tree with 2 Lloyd rounds (build-codebook's
defaults; see _VARIANTS).

The synthetic sample (the default; see `mixture`) is a Gaussian mixture with
many components of unequal weight and spread, grouped into superclusters and
with a decaying per-dimension variance, because real clip features cluster
and are far from isotropic; structureless noise would make any two
quantisers look alike. --features_dir reads real [num_clips, D] .npy files
instead (as build-codebook does).

--sample_sizes instead fits build-codebook's tree (its default beam and
refinement) on growing prefixes of one mixture sample and scores each on the
same --heldout_n points drawn after them: the sample size past which a bigger
`build-codebook --sample_size` stops lowering the error on unseen clips.
"""

import argparse
import os
import time

# NumPy's OpenBLAS (pthreads) splits even the tree's tiny [m, D] x [D, k]
# products over threads; on this shared 2-core machine that made assign() 17x
# slower than with one thread. Set before NumPy loads it; faiss (the flat
# k-means) uses its own OpenMP OpenBLAS, unaffected (same time either way).
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')

import faiss  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from vlm_jax.videobert import codebook as codebook_lib

# build() keyword arguments per --tree_variants name.
_VARIANTS = {
    'default': {},
    'kmeans++': {'init': 'kmeans++'},
    'nredo3': {'nredo': 3},
    'nredo5': {'nredo': 5},
    'beam4': {'beam': 4},
    'beam4_refine2': {'beam': 4, 'refine_rounds': 2},  # build-codebook's defaults
}


def mixture(n: int, d: int, components: int, seed: int, groups: int = 0,
            chunk: int = 16384) -> np.ndarray:
  """[n, d] float32 points from a clustered Gaussian mixture.

  `components` Gaussians with Dirichlet(1) weights (some clusters big, many
  small), their centres drawn around `groups` supercluster centres (sqrt of
  `components` by default), so there is structure at two scales. Each
  component has its own isotropic spread, log-uniform over [0.3, 1.5] (tight
  and loose clusters). Every coordinate, centres and noise alike, is then
  scaled by a decaying spectrum (dimension j by (j + 1)**-0.5, normalised to
  unit mean variance), as the variance of real embeddings concentrates in a
  few directions; k-means is rotation invariant, so the axes need no random
  rotation. Unit scale per coordinate: supercluster centres ~ N(0, 4),
  component offsets ~ N(0, 1), noise ~ N(0, spread**2).
  """
  rng = np.random.default_rng(seed)
  groups = groups or max(1, int(round(np.sqrt(components))))
  spectrum = (np.arange(d) + 1.0)**-0.5
  spectrum = (spectrum / np.sqrt(np.mean(spectrum**2))).astype(np.float32)
  group_centres = 2 * rng.standard_normal((groups, d), np.float32)
  centres = group_centres[rng.integers(groups, size=components)]
  centres += rng.standard_normal((components, d), np.float32)
  spread = np.exp(rng.uniform(np.log(0.3), np.log(1.5), components)).astype(np.float32)
  labels = rng.choice(components, n, p=rng.dirichlet(np.ones(components)))
  x = np.empty((n, d), np.float32)
  for start in range(0, n, chunk):  # in chunks: float32 throughout, no [n, d] temporaries
    part = labels[start:start + chunk]
    noise = rng.standard_normal((len(part), d), np.float32) * spread[part, None]
    x[start:start + chunk] = (centres[part] + noise) * spectrum
  return x


def read_features(folder: str, n: int, seed: int) -> np.ndarray:
  """All clips of the .npy files in `folder`, or a seeded sample of n of them."""
  arrays = [codebook_lib.load_features(os.path.join(folder, name), None)
            for name in codebook_lib.list_features(folder)]
  if not arrays:
    raise SystemExit(f'{folder}: no .npy feature files')
  x = np.concatenate([np.asarray(a, np.float32) for a in arrays])
  if n < len(x):
    x = x[np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))]
  return np.ascontiguousarray(x)


def mse(x: np.ndarray, centroids: np.ndarray, ids: np.ndarray, chunk: int = 65536) -> float:
  total = 0.0
  for start in range(0, len(x), chunk):  # no [N, D] temporary
    diff = x[start:start + chunk] - centroids[ids[start:start + chunk]]
    total += float(np.einsum('nd,nd->', diff, diff, dtype=np.float64))
  return total / len(x)


def flat_nearest(centroids: np.ndarray, x: np.ndarray) -> np.ndarray:
  index = faiss.IndexFlatL2(centroids.shape[1])
  index.add(np.ascontiguousarray(centroids, np.float32))
  return index.search(x, 1)[1][:, 0]


def sample_size_sweep(args) -> None:
  """Prints build time and sample / held-out error per --sample_sizes entry."""
  sizes = sorted(int(v) for v in args.sample_sizes.split(','))
  if args.heldout_n <= 0:
    raise SystemExit('--sample_sizes needs --heldout_n > 0')
  leaves = args.k**args.levels
  components = args.components or max(1, leaves // 4)
  x = mixture(sizes[-1] + args.heldout_n, args.d, components, args.seed)
  heldout = x[sizes[-1]:]
  print(f'Gaussian mixture, {components} components, D = {args.d}; {args.levels} levels x '
        f'{args.k} ({leaves} leaves), niter = {args.niter}, beam 4 + 2 refinement rounds; '
        f'{len(heldout)} held-out points; load average {os.getloadavg()[0]:.1f}\n', flush=True)
  print('| sample size | points per leaf | build (s) | sample error | held-out error | '
        'held-out vs the largest sample |')
  print('|---|---|---|---|---|---|')
  rows = []
  for size in sizes:
    sample = x[:size]
    start = time.perf_counter()
    book = codebook_lib.build(sample, levels=args.levels, k=args.k, seed=args.seed,
                              niter=args.niter, **_VARIANTS['beam4_refine2'])
    build_s = time.perf_counter() - start
    rows.append((size, build_s, mse(sample, book.leaf_centroids,
                                    codebook_lib.assign(book, sample)),
                 mse(heldout, book.leaf_centroids, codebook_lib.assign(book, heldout))))
  for size, build_s, err, held in rows:
    print(f'| {size:,} | {size / leaves:.1f} | {build_s:.1f} | {err:.2f} | {held:.2f} | '
          f'{100 * (held / rows[-1][3] - 1):+.1f}% |')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--n', type=int, default=50_000, help='Sample size (points).')
  parser.add_argument('--d', type=int, default=128, help='Dimension (synthetic data).')
  parser.add_argument('--levels', type=int, default=3)
  parser.add_argument('--k', type=int, default=12)
  parser.add_argument('--niter', type=int, default=20, help='k-means iterations, tree and flat.')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--components', type=int, default=0,
                      help='Mixture components (synthetic); default k**levels // 4.')
  parser.add_argument('--features_dir', default=None,
                      help='Read <video_id>.npy [num_clips, D] features here instead.')
  parser.add_argument('--tree_variants', default='default',
                      help=f'Comma-separated build() settings: {", ".join(_VARIANTS)}.')
  parser.add_argument('--flat_nearest_n', type=int, default=20_000,
                      help='Points for the "flat nearest leaf" error (exhaustive, so slow).')
  parser.add_argument('--heldout_n', type=int, default=0,
                      help='Also report the error on this many further points of the same '
                      'mixture, not used to fit (synthetic; changes the sample drawn).')
  parser.add_argument('--skip_flat', action='store_true', help='Only the tree (flat is slow).')
  parser.add_argument('--sample_sizes', default='',
                      help='Comma-separated sample sizes: the sweep above instead of the '
                           'comparison with flat.')
  args = parser.parse_args()
  if args.sample_sizes:
    sample_size_sweep(args)
    return
  leaves = args.k**args.levels

  start = time.perf_counter()
  if args.features_dir:
    x = read_features(args.features_dir, args.n, args.seed)
    heldout = x[:0]
    data = f'features of {args.features_dir}'
  else:
    components = args.components or max(1, leaves // 4)
    x = mixture(args.n + args.heldout_n, args.d, components, args.seed)
    x, heldout = x[:args.n], x[args.n:]
    data = f'Gaussian mixture, {components} components'
  n, d = x.shape
  print(f'data: {data}; N = {n}, D = {d}, levels = {args.levels}, k = {args.k} '
        f'({leaves} leaves), niter = {args.niter}, faiss threads = '
        f'{faiss.omp_get_max_threads()}, load average {os.getloadavg()[0]:.1f} '
        f'({time.perf_counter() - start:.0f} s to make)', flush=True)
  sub = x[:min(n, args.flat_nearest_n)]

  rows = []
  for variant in args.tree_variants.split(','):
    start = time.perf_counter()
    book = codebook_lib.build(x, levels=args.levels, k=args.k, seed=args.seed,
                              niter=args.niter, **_VARIANTS[variant])
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    ids = codebook_lib.assign(book, x)
    assign_s = time.perf_counter() - start
    err = mse(x, book.leaf_centroids, ids)
    sub_err = mse(sub, book.leaf_centroids, ids[:len(sub)])
    flat_err = mse(sub, book.leaf_centroids, flat_nearest(book.leaf_centroids, sub))
    rows.append([f'hierarchical, {variant}', build_s, n / assign_s, err,
                 f'{flat_err:.4f} (descent {sub_err:.4f}, {len(sub)} points)',
                 len(np.unique(ids))])
    print(f'{variant}: build {build_s:.1f} s, assign {assign_s:.1f} s, error {err:.4f}, '
          f'load average {os.getloadavg()[0]:.1f}', flush=True)
    if len(heldout):
      held_err = mse(heldout, book.leaf_centroids, codebook_lib.assign(book, heldout))
      print(f'{variant}: held-out error {held_err:.4f}')

  if not args.skip_flat:
    start = time.perf_counter()
    kmeans = faiss.Kmeans(d, leaves, niter=args.niter, seed=args.seed, verbose=False,
                          max_points_per_centroid=-(-n // leaves), min_points_per_centroid=1)
    kmeans.train(x)
    flat_build = time.perf_counter() - start
    print(f'flat: build {flat_build:.1f} s, load average {os.getloadavg()[0]:.1f}', flush=True)
    start = time.perf_counter()
    flat_ids = flat_nearest(kmeans.centroids, x)
    flat_assign = time.perf_counter() - start
    flat_err = mse(x, kmeans.centroids, flat_ids)
    if len(heldout):
      held_err = mse(heldout, kmeans.centroids, flat_nearest(kmeans.centroids, heldout))
      print(f'flat: held-out error {held_err:.4f}')
    rows.append([f'flat faiss k-means ({leaves})', flat_build, n / flat_assign, flat_err, '=',
                 len(np.unique(flat_ids))])

  print()
  print('| method | build (s) | assign (points/s) | mean sq. error | build speed-up vs flat '
        '| assign speed-up vs flat | error vs flat | error, flat nearest leaf | leaves used |')
  print('|---|---|---|---|---|---|---|---|---|')
  for name, build_s, rate, err, flat_nearest_err, leaves_used in rows:
    if args.skip_flat:
      ratios = '| - | - | -'
    else:
      ratios = (f'| {flat_build / build_s:.1f}x | {rate * flat_assign / n:.1f}x '
                f'| {100 * (err / flat_err - 1):+.1f}%')
    print(f'| {name} | {build_s:.1f} | {rate:,.0f} | {err:.4f} {ratios} | {flat_nearest_err} '
          f'| {leaves_used} / {leaves} |')


if __name__ == '__main__':
  main()
