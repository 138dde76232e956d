"""Hierarchical k-means codebook (VideoBERT visual tokens) and its commands."""

import dataclasses
import json
import os
import subprocess
import sys

import faiss
import numpy as np
import pytest

from vlm_jax.stages import assign_tokens, build_codebook
from vlm_jax.videobert import codebook as codebook_lib

LEVELS, K, DIM = 3, 4, 16


@pytest.fixture(scope='module')
def features():
  return np.random.default_rng(0).standard_normal((3000, DIM)).astype(np.float32)


@pytest.fixture(scope='module')
def book(features):
  return codebook_lib.build(features, levels=LEVELS, k=K, seed=0, niter=10)


def brute_force_descent(book, x):
  """The tree descent, one point and one level at a time, in float64."""
  leaves = []
  for point in x.astype(np.float64):
    node = 0
    for level, centroids in enumerate(book.centroids_per_level):
      first = node * book.k if level else 0
      children = centroids[first:first + book.k].astype(np.float64)
      node = first + int(np.argmin(((children - point)**2).sum(axis=1)))
    leaves.append(node)
  return np.array(leaves)


def naive_beam_descent(book, x, beam):
  """The beam descent, one point at a time, in float64: keep the `beam` nearest nodes per level."""
  leaves = []
  for point in x.astype(np.float64):
    kept = [0]
    for level, centroids in enumerate(book.centroids_per_level):
      candidates = [c for node in kept
                    for c in (range(node * book.k, node * book.k + book.k) if level
                              else range(book.k))]
      dist = [((centroids[c].astype(np.float64) - point)**2).sum() for c in candidates]
      kept = [candidates[i] for i in np.argsort(dist, kind='stable')[:beam]]
    leaves.append(kept[0])
  return np.array(leaves)


def test_tree_shapes(book):
  assert book.levels == LEVELS and book.k == K
  assert [c.shape for c in book.centroids_per_level] == [(K**(l + 1), DIM) for l in range(LEVELS)]
  assert all(c.dtype == np.float32 for c in book.centroids_per_level)
  assert book.leaf_centroids is book.centroids_per_level[-1]
  assert book.nearest_clip.shape == (K**LEVELS,) and book.nearest_clip.dtype == np.int64


def test_children_cluster_their_parents_points(book, features):
  # Breadth-first layout: a level-1 node's centroid is near the mean of its
  # children's points, i.e. children i*k .. i*k+k-1 really belong to node i.
  leaf = codebook_lib.assign(book, features)
  parent = leaf // K
  for node in np.unique(parent):
    mean = features[parent == node].mean(axis=0)
    nearest = np.argmin(((book.centroids_per_level[-2] - mean)**2).sum(axis=1))
    assert nearest == node


def test_assign_matches_brute_force_descent(book, features):
  x = np.concatenate([features[:500], np.random.default_rng(1).standard_normal((300, DIM))])
  expected = brute_force_descent(book, x)
  np.testing.assert_array_equal(codebook_lib.assign(book, x, batch_size=128), expected)
  assert codebook_lib.assign(book, x).dtype == np.int64


def test_level_one_recovers_blobs():
  rng = np.random.default_rng(2)
  centers = rng.standard_normal((K, DIM)) * 20
  labels = np.repeat(np.arange(K), 250)
  x = (centers[labels] + rng.standard_normal((len(labels), DIM))).astype(np.float32)
  book = codebook_lib.build(x, levels=2, k=K, seed=0)
  top = codebook_lib.assign(book, x) // K
  # Same partition up to renaming: each blob maps to one cluster, one-to-one.
  pairs = set(zip(labels.tolist(), top.tolist()))
  assert len(pairs) == K and len({b for _, b in pairs}) == K
  for blob, cluster in pairs:
    assert np.linalg.norm(book.centroids_per_level[0][cluster] - centers[blob]) < 1.0


@pytest.mark.parametrize('n', [1, 3, 9, 40])
def test_small_nodes_still_give_complete_tree(n):
  x = np.random.default_rng(3).standard_normal((n, DIM)).astype(np.float32)
  book = codebook_lib.build(x, levels=LEVELS, k=K)
  assert book.leaf_centroids.shape == (K**LEVELS, DIM)
  assert all(np.isfinite(c).all() for c in book.centroids_per_level)
  leaf = codebook_lib.assign(book, x)
  np.testing.assert_array_equal(leaf, brute_force_descent(book, x))
  assert (book.nearest_clip >= 0).sum() == len(np.unique(leaf))
  if n < K:
    # Filler children are exact copies of the node's points: each point sits
    # on a leaf of its own, from the root down.
    np.testing.assert_array_equal(book.leaf_centroids[leaf], x)
    assert len(np.unique(leaf)) == n


def test_deterministic_for_a_seed(features, book):
  again = codebook_lib.build(features, levels=LEVELS, k=K, seed=0, niter=10)
  for a, b in zip(book.centroids_per_level, again.centroids_per_level):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(book.nearest_clip, again.nearest_clip)
  other = codebook_lib.build(features, levels=LEVELS, k=K, seed=1, niter=10)
  assert not np.array_equal(book.leaf_centroids, other.leaf_centroids)


@pytest.mark.parametrize('options', [dict(init='kmeans++'), dict(nredo=3),
                                     dict(init='kmeans++', nredo=2)])
def test_init_and_nredo_keep_the_descent_and_determinism(features, options):
  book = codebook_lib.build(features, levels=LEVELS, k=K, seed=0, niter=10, **options)
  x = np.concatenate([features[:300], np.random.default_rng(4).standard_normal((200, DIM))])
  np.testing.assert_array_equal(codebook_lib.assign(book, x), brute_force_descent(book, x))
  again = codebook_lib.build(features, levels=LEVELS, k=K, seed=0, niter=10, **options)
  for a, b in zip(book.centroids_per_level, again.centroids_per_level):
    np.testing.assert_array_equal(a, b)


def test_nredo_never_raises_a_nodes_objective(features):
  def objective(book):
    leaf = codebook_lib.assign(book, features)
    # The root's k-means over all points: the node whose objective nredo minimises.
    top = leaf // K**(LEVELS - 1)
    return np.sum((features - book.centroids_per_level[0][top])**2)
  one = codebook_lib.build(features, levels=LEVELS, k=K, seed=0, niter=10)
  three = codebook_lib.build(features, levels=LEVELS, k=K, seed=0, niter=10, nredo=3)
  assert objective(three) <= objective(one) * (1 + 1e-4)


def test_bad_init_or_nredo_raise(features):
  with pytest.raises(ValueError, match='init'):
    codebook_lib.build(features, levels=2, k=K, init='farthest')
  with pytest.raises(ValueError, match='nredo'):
    codebook_lib.build(features, levels=2, k=K, nredo=0)
  with pytest.raises(ValueError, match='beam'):
    codebook_lib.build(features, levels=2, k=K, beam=0)


def test_build_restores_faiss_threads(features):
  before = faiss.omp_get_max_threads()
  codebook_lib.build(features[:200], levels=2, k=K)
  assert faiss.omp_get_max_threads() == before


def test_sample_size_is_seeded_and_uses_the_sample(features):
  a = codebook_lib.build(features, levels=2, k=K, sample_size=500, seed=5)
  b = codebook_lib.build(features, levels=2, k=K, sample_size=500, seed=5)
  np.testing.assert_array_equal(a.leaf_centroids, b.leaf_centroids)
  # All rows in nearest_clip are rows of `features`, of the 500 sampled.
  assert a.nearest_clip.max() < len(features)


def test_nearest_clip_is_the_closest_clip_of_its_leaf(book, features):
  leaf = codebook_lib.assign(book, features)
  for node in range(K**LEVELS):
    members = np.flatnonzero(leaf == node)
    if not len(members):
      assert book.nearest_clip[node] == -1
      continue
    clip = book.nearest_clip[node]
    assert leaf[clip] == node
    dist = ((features[members] - book.leaf_centroids[node])**2).sum(axis=1)
    assert np.isclose(((features[clip] - book.leaf_centroids[node])**2).sum(), dist.min())


def test_clip_ids_replace_row_indices(features):
  ids = np.arange(len(features)) + 10_000
  a = codebook_lib.build(features, levels=2, k=K, seed=0, clip_ids=ids)
  b = codebook_lib.build(features, levels=2, k=K, seed=0)
  np.testing.assert_array_equal(a.nearest_clip, np.where(b.nearest_clip >= 0,
                                                         b.nearest_clip + 10_000, -1))


@pytest.mark.parametrize('beam', [2, 5])
def test_beam_descent_matches_a_naive_beam_search(features, beam):
  book = codebook_lib.build(features, levels=LEVELS, k=K, seed=0, niter=10, beam=beam)
  assert book.beam == beam
  x = np.concatenate([features[:300], np.random.default_rng(5).standard_normal((200, DIM))])
  np.testing.assert_array_equal(codebook_lib.assign(book, x, batch_size=64),
                                naive_beam_descent(book, x, beam))


def test_a_beam_as_wide_as_a_level_finds_the_nearest_leaf(book, features):
  wide = dataclasses.replace(book, beam=K**(LEVELS - 1))
  x = np.random.default_rng(6).standard_normal((400, DIM)).astype(np.float32)
  dist = ((x[:, None].astype(np.float64) - book.leaf_centroids[None])**2).sum(-1)
  np.testing.assert_array_equal(codebook_lib.assign(wide, x), dist.argmin(1))
  # The greedy tree misses the nearest leaf for some points: the beam matters.
  assert (codebook_lib.assign(book, x) != dist.argmin(1)).any()


def test_refine_moves_every_centroid_to_the_mean_of_its_descended_points(features):
  book = codebook_lib.build(features, levels=LEVELS, k=K, seed=0, niter=10, beam=2)
  before = [c.copy() for c in book.centroids_per_level]
  leaf = naive_beam_descent(book, features, 2)
  codebook_lib.refine(book, features)
  for level, centroids in enumerate(book.centroids_per_level):
    node = leaf // K**(LEVELS - 1 - level)
    for i in range(len(centroids)):
      members = features[node == i]
      expected = members.astype(np.float64).mean(0) if len(members) else before[level][i]
      np.testing.assert_allclose(centroids[i], expected, atol=1e-5)
  # build's refine_rounds is the same update.
  once = codebook_lib.build(features, levels=LEVELS, k=K, seed=0, niter=10, beam=2,
                            refine_rounds=1)
  for a, b in zip(once.centroids_per_level, book.centroids_per_level):
    np.testing.assert_array_equal(a, b)


def test_beam_and_refinement_lower_the_quantisation_error():
  rng = np.random.default_rng(7)
  centres = rng.standard_normal((60, DIM)) * 3
  x = (centres[rng.integers(60, size=4000)] + rng.standard_normal((4000, DIM))).astype(np.float32)

  def error(**options):
    book = codebook_lib.build(x, levels=LEVELS, k=K, seed=0, niter=10, **options)
    return np.mean(((x - book.leaf_centroids[codebook_lib.assign(book, x)])**2).sum(1))
  plain, beam, refined = error(), error(beam=4), error(beam=4, refine_rounds=2)
  assert refined < beam < plain


def test_save_load_round_trip(book, tmp_path):
  book.extras['note'] = np.array(['x'])
  path = str(tmp_path / 'book')  # no suffix: save must not append '.npz'
  try:
    book.save(path)
  finally:
    del book.extras['note']
  assert os.listdir(tmp_path) == ['book']
  np.testing.assert_array_equal(np.load(path)['leaf_centroids'], book.leaf_centroids)
  loaded = codebook_lib.Codebook.load(path)
  assert (loaded.levels, loaded.k) == (LEVELS, K)
  for a, b in zip(book.centroids_per_level, loaded.centroids_per_level):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(loaded.nearest_clip, book.nearest_clip)
  assert loaded.extras['note'].tolist() == ['x']
  assert loaded.beam == 1 and 'beam' not in loaded.extras


def test_beam_is_saved_and_old_files_descend_greedily(book, tmp_path):
  path = str(tmp_path / 'book.npz')
  dataclasses.replace(book, beam=3).save(path)
  assert codebook_lib.Codebook.load(path).beam == 3
  with np.load(path) as data:
    old = {name: data[name] for name in data.files if name != 'beam'}
  np.savez(path, **old)
  assert codebook_lib.Codebook.load(path).beam == 1


def write_videos(folder, rng):
  os.makedirs(folder)
  videos = {}
  for i, clips in enumerate([30, 50, 1, 70, 45]):
    x = rng.standard_normal((clips, DIM)).astype(np.float16 if i % 2 else np.float32)
    videos[f'video{i}'] = x
    np.save(os.path.join(folder, f'video{i}.npy'), x)
  with open(os.path.join(folder, 'corrupt.npy'), 'wb') as f:
    f.write(b'\x93NUMPY not really')
  np.save(os.path.join(folder, 'wrong_rank.npy'), np.zeros((4, 2, DIM), np.float32))
  np.save(os.path.join(folder, 'wrong_dim.npy'), np.zeros((4, DIM + 1), np.float32))
  return videos


def test_commands(tmp_path):
  videos = write_videos(str(tmp_path / 'features'), np.random.default_rng(4))
  output = str(tmp_path / 'codebook.npz')
  manifest = build_codebook.run(str(tmp_path / 'features'), output, levels=2, k=K,
                                sample_size=150, seed=0)
  assert not manifest['skipped']
  on_disk = json.load(open(output + '.manifest.json', encoding='utf-8'))
  assert on_disk['counts']['videos'] == 5 and on_disk['counts']['failed'] == 3
  assert on_disk['counts']['clips'] == 196 and on_disk['counts']['sampled'] == 150
  assert {f['file'] for f in on_disk['failures']} == {'corrupt.npy', 'wrong_rank.npy',
                                                      'wrong_dim.npy'}
  assert on_disk['parameters']['levels'] == 2
  assert (on_disk['parameters']['beam'], on_disk['parameters']['refine_rounds']) == (4, 2)

  book = codebook_lib.Codebook.load(output)
  assert book.leaf_centroids.shape == (K**2, DIM) and book.beam == 4
  vids, clips = book.extras['nearest_video_id'], book.extras['nearest_clip_index']
  for leaf in range(K**2):
    if book.nearest_clip[leaf] < 0:
      assert vids[leaf] == '' and clips[leaf] == -1
      continue
    clip = videos[str(vids[leaf])][clips[leaf]].astype(np.float32)
    assert codebook_lib.assign(book, clip[None])[0] == leaf

  # The visual-token table model.visual_init reads: row i is leaf (token) i.
  centroids = str(tmp_path / 'codebook.centroids.npy')
  assert on_disk['centroids'] == centroids
  np.testing.assert_array_equal(np.load(centroids), book.leaf_centroids)

  # Same inputs and parameters: skipped, file untouched (a missing centroids file is rewritten).
  mtime = os.stat(output).st_mtime_ns
  os.remove(centroids)
  assert build_codebook.run(str(tmp_path / 'features'), output, levels=2, k=K,
                            sample_size=150, seed=0)['skipped']
  assert os.stat(output).st_mtime_ns == mtime
  np.testing.assert_array_equal(np.load(centroids), book.leaf_centroids)
  # Other parameters: rebuilt.
  assert not build_codebook.run(str(tmp_path / 'features'), output, levels=2, k=K,
                                sample_size=150, seed=1)['skipped']

  tokens_dir = str(tmp_path / 'tokens')
  manifest = assign_tokens.run(str(tmp_path / 'features'), output, tokens_dir)
  assert manifest['counts']['written'] == 5 and manifest['counts']['failed'] == 3
  book = codebook_lib.Codebook.load(output)
  for video_id, x in videos.items():
    tokens = np.load(os.path.join(tokens_dir, f'{video_id}.npy'))
    assert tokens.dtype == np.int32 and tokens.shape == (len(x),)
    np.testing.assert_array_equal(tokens, codebook_lib.assign(book, x))
  again = assign_tokens.run(str(tmp_path / 'features'), output, tokens_dir)
  assert again['counts']['written'] == 0 and again['counts']['skipped_existing'] == 5
  assert json.load(open(os.path.join(tokens_dir, 'manifest.json'),
                        encoding='utf-8'))['counts']['skipped_existing'] == 5

  # Two processes: disjoint shares (by file size) that cover the folder, the same tokens.
  features, by_two = str(tmp_path / 'features'), str(tmp_path / 'tokens_by_two')
  parts = [assign_tokens.run(features, output, by_two, i, 2, progress=False) for i in range(2)]
  ids = [p['share']['item_ids'] for p in parts]
  assert not set(ids[0]) & set(ids[1])
  assert sorted(ids[0] + ids[1]) == codebook_lib.list_features(features)
  assert [sum(p['counts'][k] for p in parts) for k in ('written', 'failed')] == [5, 3]
  for video_id in videos:
    np.testing.assert_array_equal(np.load(os.path.join(by_two, f'{video_id}.npy')),
                                  np.load(os.path.join(tokens_dir, f'{video_id}.npy')))
  # Process 1 stopped early: the merge names it; rerun alone, it does only what is left.
  lost = next(n for n in ids[1] if os.path.exists(os.path.join(by_two, n)))
  os.remove(os.path.join(by_two, lost))
  os.remove(os.path.join(by_two, 'manifest-00001-of-00002.json'))
  merge = subprocess.run([sys.executable, '-m', 'vlm_jax.cli', 'assign-tokens', '--features',
                          features, '--codebook', output, '--output', by_two, '--merge'],
                         capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert merge.returncode == 1 and merge.stderr.strip().splitlines()[-1] == (
      f'vlm-jax assign-tokens: {by_two}: no manifest-00001-of-00002.json; run process 1 of 2 '
      '(--process_index=1) first')
  assert assign_tokens.run(features, output, by_two, 1, 2, progress=False)['counts'][
      'written'] == 1
  merged = assign_tokens.merge(features, output, by_two)
  assert [merged['counts'][k] for k in ('files', 'done', 'failed', 'missing')] == [8, 5, 3, 0]
  # Tokens deleted after their process reported them: missing, named with their process.
  os.remove(os.path.join(by_two, next(n for n in ids[0]
                                      if os.path.exists(os.path.join(by_two, n)))))
  with pytest.raises(ValueError, match=r"1 of 8 feature files were neither done nor failed .*"
                                       r"process 0's"):
    assign_tokens.merge(features, output, by_two)


def test_build_codebook_fits_a_uniform_sample_and_reads_only_its_files(tmp_path):
  """The tree of the sampled rows of all files (by hand), read from only the files they are in.

  A file whose sampled rows hold NaNs (its header is fine) is reported and its
  rows leave the sample.
  """
  rng = np.random.default_rng(7)
  folder = tmp_path / 'features'
  folder.mkdir()
  arrays = {f'v{i:02d}': rng.standard_normal((int(rng.integers(5, 30)), DIM)).astype(np.float32)
            for i in range(40)}
  arrays['v07'][:] = np.nan
  for name, x in arrays.items():
    np.save(folder / f'{name}.npy', x)
  names = sorted(arrays)
  offsets = np.cumsum([0] + [len(arrays[n]) for n in names])
  owner = lambda rows: np.searchsorted(offsets, rows, side='right') - 1
  # The first seed whose sample of 25 clips reaches the NaN file and misses some others.
  for seed in range(100):
    chosen = np.sort(np.random.default_rng(seed).choice(offsets[-1], 25, replace=False))
    touched = set(owner(chosen))
    if names.index('v07') in touched and len(touched) < 30:
      break
  else:
    pytest.fail('no seed samples the NaN file and leaves files unread')
  manifest = build_codebook.run(str(folder), str(tmp_path / 'book.npz'), levels=2, k=3,
                                sample_size=25, seed=seed)
  assert manifest['counts']['files_read'] == len(touched)
  assert manifest['failures'] == [{'file': 'v07.npy', 'error': 'non-finite values'}]
  assert manifest['counts']['videos'] == 39
  kept = chosen[owner(chosen) != names.index('v07')]
  assert manifest['counts']['sampled'] == len(kept)
  everything = np.concatenate([arrays[n] for n in names])
  by_hand = codebook_lib.build(everything[kept], levels=2, k=3, seed=seed, clip_ids=kept,
                               beam=4, refine_rounds=2)
  book = codebook_lib.Codebook.load(str(tmp_path / 'book.npz'))
  np.testing.assert_array_equal(book.leaf_centroids, by_hand.leaf_centroids)
  np.testing.assert_array_equal(book.nearest_clip, by_hand.nearest_clip)


def test_standardized_codebook_assigns_in_the_standardized_space(tmp_path):
  """build-codebook --standardize == building on (x - mean) / std by hand, for any later x."""
  rng = np.random.default_rng(3)
  # Dimension 0 varies a thousand times more than the others, which carry the clusters.
  blobs = rng.normal(size=(4, 5)) * 3
  x = (blobs[rng.integers(0, 4, 400)] + rng.normal(size=(400, 5))).astype(np.float32)
  x[:, 0] = rng.normal(size=400) * 1000
  folder = tmp_path / 'features'
  folder.mkdir()
  np.save(folder / 'a.npy', x[:250])
  np.save(folder / 'b.npy', x[250:])
  path = str(tmp_path / 'codebook.npz')
  manifest = build_codebook.run(str(folder), path, levels=2, k=3, sample_size=None, seed=0,
                                standardize=True)
  assert manifest['parameters']['standardize']
  book = codebook_lib.Codebook.load(path)
  mean, std = x.mean(axis=0), x.std(axis=0)
  by_hand = codebook_lib.build((x - mean) / std, levels=2, k=3, seed=0, beam=4, refine_rounds=2)
  np.testing.assert_allclose(book.extras['feature_mean'], mean, rtol=1e-5)
  # The centroids file is in the features' own space: the hand-built tree's, scaled back.
  np.testing.assert_allclose(np.load(tmp_path / 'codebook.centroids.npy'),
                             by_hand.leaf_centroids * std + mean, rtol=1e-4, atol=1e-3)
  queries = (blobs[rng.integers(0, 4, 50)] + rng.normal(size=(50, 5))).astype(np.float32)
  queries[:, 0] = rng.normal(size=50) * 1000
  np.testing.assert_array_equal(codebook_lib.assign(book, queries),
                                codebook_lib.assign(by_hand, (queries - mean) / std))


def test_build_codebook_command_line_passes_beam_and_refinement(tmp_path):
  x = np.random.default_rng(8).standard_normal((300, DIM)).astype(np.float32)
  (tmp_path / 'features').mkdir()
  np.save(tmp_path / 'features' / 'a.npy', x)
  output = str(tmp_path / 'codebook.npz')

  def cli(*extra):
    return subprocess.run(
        [sys.executable, '-m', 'vlm_jax.cli', 'build-codebook',
         f'--features={tmp_path / "features"}', f'--output={output}', '--levels=2',
         f'--k={K}', *extra], capture_output=True, text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)))
  proc = cli('--beam=3', '--refine_rounds=1')
  assert proc.returncode == 0, proc.stderr
  book = codebook_lib.Codebook.load(output)
  assert book.beam == 3
  by_hand = codebook_lib.build(x, levels=2, k=K, seed=0, beam=3, refine_rounds=1)
  np.testing.assert_array_equal(book.leaf_centroids, by_hand.leaf_centroids)
  proc = cli('--beam=0')
  assert proc.returncode != 0 and 'beam' in proc.stderr
