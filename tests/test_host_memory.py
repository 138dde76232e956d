"""retain_freed_memory: freed blocks stay in the process and are reused without faults."""

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc', reason='glibc only')

# Allocates, touches and frees 256 MiB (from the main thread, then from a
# worker thread, as XLA's are), then does it again; reports resident memory
# growth after the first free and the page faults of the second round.
_PROBE = r'''
import ctypes, json, os, resource, sys, threading
from vlm_jax import host_memory
applied = host_memory.retain_freed_memory() if sys.argv[1] == 'retain' else None
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 256 << 20
def resident():
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
def round_trip():
  block = libc.malloc(SIZE)
  ctypes.memset(block, 1, SIZE)
  libc.free(block)
out = {'applied': applied}
for where in ('main', 'thread'):
  before = resident()
  if where == 'main':
    round_trip()
  else:
    worker = threading.Thread(target=round_trip); worker.start(); worker.join()
  out[where + '_kept_mib'] = (resident() - before) / 2**20
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  round_trip()
  out[where + '_refaults'] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps(out))
'''


def _probe(mode: str) -> dict:
  out = subprocess.run([sys.executable, '-c', _PROBE, mode], capture_output=True, text=True,
                       check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_memory_is_kept_and_reused_without_page_faults():
  default, retained = _probe('default'), _probe('retain')
  assert retained['applied'] is True
  # glibc's default hands a freed 256 MiB block straight back to the kernel...
  assert default['main_kept_mib'] < 64
  # ...the setting keeps it, including blocks freed by other threads, and the
  # next allocation reuses the resident pages (256 MiB would be 65,536 faults).
  assert retained['main_kept_mib'] > 200, retained
  assert retained['main_refaults'] < 1000, retained
  assert retained['thread_refaults'] < 1000, retained
