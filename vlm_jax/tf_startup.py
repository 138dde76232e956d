"""TensorFlow's start-up lines kept off stderr: `import tensorflow` with its C++ chatter filtered.

Loading TensorFlow's shared libraries prints, from C++ and before any Python
logging exists, "All log messages before absl::InitializeLog() is called are
written to STDERR", the oneDNN notice and the CPU-feature notice, twice. They
say nothing about the run and bury a command's one-line error. `install()`
makes the first `import tensorflow` run with file descriptor 2 sent to a
temporary file; once it is done (or fails), every line but those notices is
written to stderr. Only the process's start-up is touched: TensorFlow's own
warnings and errors later in the run, and everything else on stderr, pass as
they are. Commands that never import TensorFlow pay nothing.
"""

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

# What the loading of TensorFlow's libraries prints at INFO level and above.
_NOTICES = re.compile(
    r'^(WARNING: All log messages before absl::InitializeLog\(\) is called'
    r'|I\d{4} [\d:.]+ +\d+ \S+\.cc:\d+\]'
    r'|To enable the following instructions: .* rebuild TensorFlow)')


def install() -> None:
  """Filters the start-up notices of the first `import tensorflow` (no-op once it is imported)."""
  if 'tensorflow' in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
    return
  sys.meta_path.insert(0, _Finder())


@contextlib.contextmanager
def _filtered_stderr():
  """Sends fd 2 to a temporary file, then writes its lines back but TensorFlow's notices."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      lines = captured.read().decode('utf-8', errors='replace').splitlines(keepends=True)
      sys.stderr.write(''.join(line for line in lines if not _NOTICES.match(line)))
      sys.stderr.flush()


class _Loader(importlib.abc.Loader):
  """TensorFlow's own loader, its module executed inside `_filtered_stderr`."""

  def __init__(self, loader):
    self._loader = loader

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    with _filtered_stderr():
      self._loader.exec_module(module)

  def __getattr__(self, name):  # resources, is_package, ...: the real loader's
    return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
  """Finds `tensorflow` as the path finder does and wraps its loader; then steps aside."""

  def find_spec(self, name, path, target=None):
    if name != 'tensorflow':
      return None
    sys.meta_path.remove(self)
    spec = importlib.machinery.PathFinder.find_spec(name, path, target)
    if spec is not None and spec.loader is not None:
      spec.loader = _Loader(spec.loader)
    return spec
