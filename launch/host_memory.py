"""Host allocator settings that make XLA:CPU train steps fast.

Every XLA:CPU step allocates and frees its large temporary buffers. With glibc's defaults each
buffer over the mmap threshold is a fresh `mmap` that `munmap` returns to the kernel when freed,
and the heap top is trimmed back, so the next step faults every page in again; on a 2-core
machine that is a large share of a Glow step. Telling glibc to serve big blocks from the heap,
never to trim it and to keep one arena removes that cost (the benchmark in launch/RESULTS.md
measures it). The same settings can be given before start-up as environment variables:
``MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``.
"""

import ctypes
import ctypes.util

# Parameter numbers of glibc's mallopt (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2 ** 31 - 1))


def retain_freed_memory() -> bool:
  """Keeps freed host memory in the process for reuse; True where the C library allows it.

  Call it once at start-up, before the first step runs. Freed memory is then reused rather
  than returned to the system, so a process's resident size stays at its peak. Without glibc
  (e.g. macOS) nothing changes and the result is False.
  """
  library = ctypes.util.find_library("c")
  try:
    mallopt = ctypes.CDLL(library).mallopt
  except (OSError, AttributeError, TypeError):
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  mallopt.restype = ctypes.c_int
  return all(mallopt(parameter, value) == 1 for parameter, value in _SETTINGS)
