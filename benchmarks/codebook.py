"""Hierarchical k-means (VideoBERT's visual tokens) against flat k-means.

  python benchmarks/codebook.py [--n 200000] [--d 1024] [--levels 4] [--k 12]
  python benchmarks/codebook.py --n 50000 --d 128 --levels 3 --k 12   # small

On the same synthetic sample (a Gaussian mixture of 4 * k**levels components,
so there is structure at every scale) fits vlm_jax.data.codebook.build (tree,
k per node) and one flat faiss k-means with k**levels centroids, then times
assignment of the sample (tree descent vs exhaustive faiss IndexFlatL2) and
prints a Markdown table: build seconds, assignment throughput, and the mean
squared quantisation error. The tree row also gives the error of the flat
nearest of its own leaves, i.e. what the greedy descent costs.
"""

import argparse
import time

import faiss
import numpy as np

from vlm_jax.data import codebook as codebook_lib


def synthetic(n: int, d: int, components: int, seed: int) -> np.ndarray:
  """[n, d] float32 points from a Gaussian mixture with unequal weights."""
  rng = np.random.default_rng(seed)
  centers = rng.standard_normal((components, d)).astype(np.float32) * 2
  weights = rng.dirichlet(np.ones(components))
  labels = rng.choice(components, n, p=weights)
  return centers[labels] + rng.standard_normal((n, d)).astype(np.float32)


def mse(x: np.ndarray, centroids: np.ndarray, ids: np.ndarray) -> float:
  return float(np.mean(np.sum((x - centroids[ids])**2, axis=1)))


def flat_nearest(centroids: np.ndarray, x: np.ndarray) -> np.ndarray:
  index = faiss.IndexFlatL2(centroids.shape[1])
  index.add(centroids)
  return index.search(x, 1)[1][:, 0]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--n', type=int, default=50_000)
  parser.add_argument('--d', type=int, default=128)
  parser.add_argument('--levels', type=int, default=3)
  parser.add_argument('--k', type=int, default=12)
  parser.add_argument('--niter', type=int, default=20)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--skip_flat', action='store_true', help='Only the tree (flat is slow).')
  args = parser.parse_args()
  leaves = args.k**args.levels
  x = synthetic(args.n, args.d, 4 * leaves, args.seed)
  print(f'N = {args.n}, D = {args.d}, levels = {args.levels}, k = {args.k} '
        f'({leaves} leaves), niter = {args.niter}, faiss threads = {faiss.omp_get_max_threads()}')

  start = time.perf_counter()
  book = codebook_lib.build(x, levels=args.levels, k=args.k, seed=args.seed, niter=args.niter)
  tree_build = time.perf_counter() - start
  start = time.perf_counter()
  tree_ids = codebook_lib.assign(book, x)
  tree_assign = time.perf_counter() - start
  tree_mse = mse(x, book.leaf_centroids, tree_ids)
  tree_flat_mse = mse(x, book.leaf_centroids, flat_nearest(book.leaf_centroids, x))
  used = len(np.unique(tree_ids))
  rows = [('hierarchical (tree descent)', tree_build, args.n / tree_assign, tree_mse,
           f'{tree_flat_mse:.4f}', used)]

  if not args.skip_flat:
    start = time.perf_counter()
    kmeans = faiss.Kmeans(args.d, leaves, niter=args.niter, seed=args.seed, verbose=False,
                          max_points_per_centroid=-(-args.n // leaves),
                          min_points_per_centroid=1)
    kmeans.train(x)
    flat_build = time.perf_counter() - start
    start = time.perf_counter()
    flat_ids = flat_nearest(kmeans.centroids, x)
    flat_assign = time.perf_counter() - start
    rows.append((f'flat faiss k-means ({leaves})', flat_build, args.n / flat_assign,
                 mse(x, kmeans.centroids, flat_ids), '=', len(np.unique(flat_ids))))

  print()
  print('| method | build (s) | assign (points/s) | mean sq. error | error, flat nearest leaf '
        '| leaves used |')
  print('|---|---|---|---|---|---|')
  for name, build_s, rate, err, flat_err, leaves_used in rows:
    print(f'| {name} | {build_s:.1f} | {rate:,.0f} | {err:.4f} | {flat_err} '
          f'| {leaves_used} / {leaves} |')


if __name__ == '__main__':
  main()
