"""Process memory settings for the long numerical jobs (analyze, track, batch workers).

A 300k-face scan with a 4096^2 texture is worked through in arrays of tens of megabytes made
and dropped hundreds of times. glibc's malloc hands each array over a few megabytes straight
back to the kernel when it is freed, so the next one of the same size arrives as fresh pages
that the kernel must fault in and zero: on the 2-core machines we measure on, one ``bodymap
analyze`` of a 289k-face scan spent 11-12 s in the kernel (6 s with this). Keeping freed memory in the process (up to the
32 MB mmap limit per block) lets the next array reuse it. Peak memory is unchanged: only
memory already freed is kept, and it is reused first.
"""
from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_MMAP_MAX_BYTES = 32 << 20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit
_TRIM_BYTES = 1 << 30

_done = False


def reuse_freed_memory() -> bool:
    """Ask glibc to keep freed blocks up to 32 MB in the heap and to return heap memory to the
    kernel only when over 1 GiB lies unused at its top. Once per process; a no-op (False) off
    glibc (macOS, Windows, musl). Returns whether the settings took."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX_BYTES) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES) == 1
    except (OSError, AttributeError):  # not glibc
        return False
    _done = ok
    return ok
