"""Host allocator setting for long-running JAX processes (glibc malloc).

XLA's CPU runtime allocates each step's temporary buffers afresh. With
glibc's defaults, buffers of more than a few MiB are mmap-ed and returned to
the kernel when freed, so every step faults its working set back in page by
page: ~200,000 page faults (~0.4 s of kernel time) per VideoCLIP `tiny` CPU
step (benchmarks/RESULTS.md). Serving them from one heap that keeps freed
memory makes the next step reuse the same pages. The cost is that the
process's resident memory stays at its peak instead of shrinking between
steps.
"""

import ctypes
import ctypes.util
import platform

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_LARGEST = 2**31 - 1


def retain_freed_memory() -> bool:
  """Make glibc malloc keep freed memory for reuse; returns whether it applied.

  One arena (XLA's worker threads' arenas could not hold a step's larger
  buffers, which would go back to mmap), no mmap for blocks below 2 GiB, and
  no trimming of the heap's free top. Call it before JAX runs its first
  computation: threads that already allocated keep their arenas. A no-op
  (False) off glibc (macOS, musl).
  """
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return False
  libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, _LARGEST), (_M_TRIM_THRESHOLD, _LARGEST))
  return all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)
