"""Each process's share of a front-end job, balanced by size.

A stage run on several hosts at once (`vlm-jax extract-features --multihost`
or `--process_index/--process_count`) splits its list with no coordination:
every process lists the same items in the same order and computes the same
assignment, so the shares are disjoint and together are the whole list.
"""

import concurrent.futures
import heapq
import os
from typing import Any, Mapping, Sequence

from vlm_jax.data import files as files_lib
from vlm_jax.data import storage
from vlm_jax.data import video as video_lib


def balanced_shares(sizes: Sequence[float], count: int) -> list[list[int]]:
  """Indices into `sizes` per process: `count` lists, each ascending.

  The largest item first (ties: the lower index) goes to the process with
  the least total so far (ties: fewer items, then the lower process index):
  the greedy longest-processing-time rule, whose busiest process is within
  4/3 of the best possible. Equal sizes deal out in turn.
  """
  if count < 1:
    raise ValueError(f'process count must be >= 1, got {count}')
  heap = [(0.0, 0, p) for p in range(count)]
  shares: list[list[int]] = [[] for _ in range(count)]
  for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
    total, items, p = heapq.heappop(heap)
    shares[p].append(i)
    heapq.heappush(heap, (total + float(sizes[i]), items + 1, p))
  return [sorted(s) for s in shares]


# Header reads at once when sizing the shares: they wait on storage (a
# round trip each on Cloud Storage), not on the CPU.
PROBE_THREADS = 32


def video_seconds(paths: Sequence[str], known: Mapping[str, float] | None = None
                  ) -> list[float]:
  """Each video's duration: `known[path]` (a list file's), else its container's.

  A container's duration costs one header read, no decoding; PROBE_THREADS
  run at once. A video whose header has no duration counts as the mean of
  the others (1 s when none has one); one that cannot be opened counts 0 s:
  its decoding fails at once, and the process that holds it reports it.
  """
  known = known or {}

  def probe(path: str) -> float | None:
    try:
      return video_lib.probe(path)['duration']
    except video_lib.VideoDecodeError:
      return 0.0

  unknown = [p for p in paths if p not in known]
  with concurrent.futures.ThreadPoolExecutor(PROBE_THREADS) as pool:
    probed = dict(zip(unknown, pool.map(probe, unknown)))
  seconds = [known[p] if p in known else probed[p] for p in paths]
  present = [s for s in seconds if s is not None]
  typical = sum(present) / len(present) if present else 1.0
  return [typical if s is None else float(s) for s in seconds]


def check(process_index: int, process_count: int) -> None:
  """ValueError unless 0 <= process_index < process_count."""
  if process_count < 1:
    raise ValueError(f'--process_count: must be >= 1, got {process_count}')
  if not 0 <= process_index < process_count:
    raise ValueError(f'--process_index: must be in [0, {process_count}), got {process_index}')


def manifest_name(process_index: int, process_count: int) -> str:
  """manifest-00001-of-00004.json: what process 1 of 4 did."""
  return f'manifest-{process_index:05d}-of-{process_count:05d}.json'


def written_manifest(manifest: dict[str, Any]) -> str:
  """The file name a stage wrote `manifest` under: its process's, or manifest.json."""
  share = manifest.get('share')
  return manifest_name(share['index'], share['count']) if share else 'manifest.json'


def manifest_paths(output: str) -> list[str]:
  """The process manifests in `output`, sorted."""
  return storage.glob(os.path.join(storage.glob_escape(output), 'manifest-*-of-*.json'))


def take(items: Sequence[Any], sizes: Sequence[float], unit: str, process_index: int,
         process_count: int) -> tuple[list[Any], dict[str, Any]]:
  """(this process's items, the `share` record of its manifest).

  `items` are (id, ...) tuples; their order and `sizes` (in `unit`) must be
  the same in every process. The record: index, count, size (the share's
  total), unit, item_ids.
  """
  check(process_index, process_count)
  indices = balanced_shares(sizes, process_count)[process_index]
  share = dict(index=process_index, count=process_count,
               size=round(sum(float(sizes[i]) for i in indices), 3), unit=unit,
               item_ids=[items[i][0] for i in indices])
  return [items[i] for i in indices], share


def read_manifests(output: str) -> list[dict[str, Any]]:
  """Every process's manifest in `output`, in process order.

  Raises:
    ValueError: none there, manifests of runs over different process counts,
      or a process's manifest missing (named, with the flag that runs it).
  """
  paths = manifest_paths(output)
  if not paths:
    raise ValueError(f'{output}: no process manifests (manifest-*-of-*.json) to merge; run '
                     'with --process_index/--process_count or --multihost first')
  manifests = []
  for path in paths:
    manifests.append(files_lib.read_json(path))
  counts = sorted({m['share']['count'] for m in manifests})
  if len(counts) > 1:
    raise ValueError(f'{output} holds manifests of runs over {counts} processes; keep one '
                     "run's manifest-*-of-*.json")
  count = counts[0]
  absent = sorted(set(range(count)) - {m['share']['index'] for m in manifests})
  if absent:
    raise ValueError(f'{output}: no {manifest_name(absent[0], count)}'
                     + (f' (nor {len(absent) - 1} more)' if len(absent) > 1 else '')
                     + f'; run process {absent[0]} of {count} (--process_index={absent[0]}) '
                     'first')
  return sorted(manifests, key=lambda m: m['share']['index'])


def missing_items(item_ids: Sequence[str], settled: set[str],
                  manifests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """[{id, process}] of the listed items neither done nor failed (`settled`), in list order.

  `process` is the index whose share held the item, None when none did (the
  list changed after the processes ran).
  """
  owner = {i: m['share']['index'] for m in manifests for i in m['share']['item_ids']}
  return [{'id': i, 'process': owner.get(i)} for i in item_ids if i not in settled]


def check_missing(missing: Sequence[dict[str, Any]], total: int, what: str,
                  manifest_file: str) -> None:
  """ValueError naming the first missing item and the process to rerun, if any is missing."""
  if not missing:
    return
  first = missing[0]
  whose = (f"process {first['process']}'s" if first['process'] is not None
           else "in no process's share: the list changed since they ran")
  raise ValueError(f'{len(missing)} of {total} {what} were neither done nor failed by any '
                   f'process (first: {first["id"]}, {whose}); rerun those processes (all '
                   f'listed in {manifest_file})')
