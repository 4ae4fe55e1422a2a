"""glibc malloc settings for a worker process (called once, at worker start).

PERF: proxying a 64 KiB response allocates a few 64 KiB buffers per request (the bytes read from
the upstream, granian's copy for the client) and frees them a moment later. With glibc's defaults
the free shrinks the heap again (M_TRIM_THRESHOLD 128 KiB) and buffers of 128 KiB or more are
mmap'ed and unmapped per request, so the next request pays page faults and zeroed pages: ~30 % of
the worker's CPU at 64 KiB in `perf` (exc_page_fault, clear_page_erms under memmove). Keeping freed
memory at the top of the heap, and serving buffers up to 1 MiB from the heap, removes that (64 KiB
proxy: 106 → 83 µs of CPU per request; docs/PERF.md). What a worker keeps is bounded by
TRIM_THRESHOLD_BYTES above its peak use.

The environment wins: when MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_ or MALLOC_TOP_PAD_ is set
(glibc's own tunables), nothing is changed. Other C libraries (musl) are left alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h> parameter numbers
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

TRIM_THRESHOLD_BYTES = 32 * 1024 * 1024
TOP_PAD_BYTES = 16 * 1024 * 1024
MMAP_THRESHOLD_BYTES = 1024 * 1024

ENVIRONMENT_TUNABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def tune_for_proxy() -> bool:
    """Apply the settings above; False when they were not applied (not glibc, or set by the
    environment)."""
    if platform.libc_ver()[0] != "glibc" or any(name in os.environ for name in ENVIRONMENT_TUNABLES):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all((
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1,
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1,
        mallopt(M_TOP_PAD, TOP_PAD_BYTES) == 1,
    ))


def give_back() -> bool:
    """Return the heap's free memory to the system now (glibc `malloc_trim(0)`); the overload guard
    calls it when the worker nears its memory limit (fastgw/overload.py). False when not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    trim(0)
    return True
