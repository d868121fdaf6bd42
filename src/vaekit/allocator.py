"""glibc's malloc, tuned for the large short-lived tensors of training and evaluation.

By default glibc serves allocations over its mmap threshold (128 KiB, raised adaptively up to 32 MiB) with a
fresh ``mmap`` and gives them back on free, and returns freed heap to the system as soon as 128 KiB sit at its
top; a step that allocates and frees the same tens of megabytes every time can then spend much of its time in
the kernel faulting in zeroed pages. :func:`tune_allocator` keeps blocks up to 256 MiB on the heap for reuse and
trims only when 1 GiB is free, so the process holds on to its peak working set.

It is opt-in, because the gain depends on the workload (``benchmarks/allocator.py``, BENCHMARKS.md "Allocator",
2 CPU cores): ``mnist8-hvae`` trained 1.04-1.16x faster, and IWAE evaluation in small chunks (k = 10) 2.6x
faster, but the other presets trained at the same speed and evaluation at k = 100 (one large chunk) was
0.75-0.92x as fast. Call it at the start of a script whose workload it helps. ``VAEKIT_DEFAULT_MALLOC=1`` turns
it into a no-op; other C libraries (macOS, Windows, musl) are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 256 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; return whether the settings took effect
    (False when ``VAEKIT_DEFAULT_MALLOC`` is set or the C library is not glibc)."""
    if os.environ.get("VAEKIT_DEFAULT_MALLOC") or not sys.platform.startswith("linux"):
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) & bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
