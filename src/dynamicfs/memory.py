"""glibc malloc settings for the mount daemon.

The daemon moves 1 MiB block buffers between the trio thread and up to ~20 worker threads. With
glibc's default of up to 8 arenas per CPU, each worker allocates from an arena of its own, and a
buffer freed on the trio thread goes back to the arena it came from: every arena keeps its own
high-water mark of freed but unreturned memory, so RSS grows far beyond what is live (measured
on a 1 GiB write, read and random write with ~290 MiB live: 596 MiB peak RSS with the default
arenas, 349 MiB with one). One arena lets every thread reuse what any other freed. A fixed mmap
threshold (every block its own mapping) bounded RSS too, but cost up to half the throughput here:
each fresh 1 MiB mapping takes 256 page faults.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # from glibc's <malloc.h>


def limit_malloc_arenas(arenas: int = 1) -> bool:
    """Cap glibc's malloc arenas (call before threads start); False where it does not apply."""
    if "MALLOC_ARENA_MAX" in os.environ or "arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return False  # the user chose; do not override
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt): nothing to tune
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_ARENA_MAX, arenas) != 1:
        log.warning("mallopt(M_ARENA_MAX, %d) failed; memory use may be higher", arenas)
        return False
    return True


def trim_malloc() -> None:
    """Give freed heap memory back to the kernel (glibc's malloc_trim; a no-op elsewhere).

    With one arena, freed block buffers in the middle of the heap stay resident: glibc only
    returns the top of the heap by itself, while malloc_trim also releases every whole free
    page inside it.
    """
    global _trim
    if _trim is None:
        try:
            fn = ctypes.CDLL(None).malloc_trim
            fn.argtypes = [ctypes.c_size_t]
            fn.restype = ctypes.c_int
            _trim = fn
        except (OSError, AttributeError):
            _trim = False
    if _trim:
        _trim(0)


_trim = None  # the malloc_trim function, False where there is none


_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int | None:
    """This process's resident set size (None where /proc is not there)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None
