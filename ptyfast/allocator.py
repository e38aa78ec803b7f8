"""Keep freed memory in the process for reuse (glibc): PyTorch on the CPU has no caching allocator, so every
batch's activations (tens of MB) are fresh ``mmap`` pages that the kernel must fault in and zero, and ``free``
hands them straight back. Measured (PtyNet-S, torch bf16, 2 cores, 1,600 frames end to end): 1.1 M page faults
and 3 s of system time per run; with freed memory kept, 20–50 k faults, 0.1 s, and the run 1.5× faster. ONNX
Runtime has its own arena and is unaffected.

This sets glibc's ``M_MMAP_THRESHOLD`` (allocations served from the heap, not fresh mappings) and
``M_TRIM_THRESHOLD`` (freed heap kept, not returned), for the whole process. Peak memory is unchanged: what is
kept is what the last batch used. A user's own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the
environment wins; elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for the next allocation (once per process); True when in force."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux") or any(k in os.environ for k in
                                                   ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return _done
    _done = bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 31))
    return _done
