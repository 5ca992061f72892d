"""Keep the process's memory close to what it really uses.

glibc gives each thread that allocates its own malloc arena (up to 8 × cores); TensorStore's
decode/encode threads then leave freed chunk buffers scattered across many arenas, and the
resident size grows far past the live data. Capping the arenas keeps the copy engine's peak
near ``baseline + 2 × workers × unit`` (measured with scripts/measure_memory.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_ARENA_MAX = -8
"""mallopt parameter number of M_ARENA_MAX in glibc's malloc.h."""


def limit_malloc_arenas(count: int = 2) -> bool:
    """Cap glibc's malloc arenas (a no-op elsewhere). Returns whether the cap was set.

    Must run before worker threads start allocating, i.e. at the start of the command.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, count))
