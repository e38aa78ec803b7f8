"""One CPU-thread setting for everything ptyfast computes with: torch, ONNX Runtime, the CPU FFTs (scipy.fft
or FFTW, :mod:`ptyfast.kernels.cpu_fft`) and numpy's BLAS (through threadpoolctl). ``reconstruct --threads N``
sets it; the default is the cores this process may use (``os.sched_getaffinity``), so a job pinned by a batch
scheduler stays on its cores."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading

_threads: int | None = None
_local = threading.local()  # a per-thread override (:func:`limited`)
_blas_limit = None  # the threadpoolctl controller, kept alive so its limit holds


@functools.cache
def available() -> int:
    """Cores this process may use (affinity-aware; read once: every FFT asks)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def get() -> int:
    """The thread count in force in the calling thread: its :func:`limited` count, else the one set with
    :func:`set_threads`, else :func:`available`."""
    return getattr(_local, "count", None) or _threads or available()


@contextlib.contextmanager
def limited(n: int):
    """Within this block, in the calling thread only, the FFTs use ``n`` workers: for work already spread over
    :func:`get` threads by the caller, where each of them spawning :func:`get` FFT workers would oversubscribe."""
    old = getattr(_local, "count", None)
    _local.count = max(1, int(n))
    try:
        yield
    finally:
        _local.count = old


@contextlib.contextmanager
def serial_blas():
    """BLAS on one thread within this block, for linear algebra too small to share (the phase-offset solve's
    ARPACK on vectors of a few thousand): OpenBLAS's worker threads spin for ≈ 0.1 s after each call, taking a
    core from whatever runs beside or next (measured with perf: 0.14 CPU-s per 1,600-frame reconstruct). The
    limit is process-wide (BLAS pools are), so only for short blocks."""
    try:
        from threadpoolctl import threadpool_limits
    except ModuleNotFoundError:  # pragma: no cover - a dependency; absent only in odd installs
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def set_threads(n: int | None) -> int:
    """Use ``n`` threads (None: all available) in every library; returns the count in force.

    torch is only configured when it is already imported (importing it costs a second); the backends pass the
    same count to torch and ONNX Runtime when they load."""
    global _threads, _blas_limit
    _threads = int(n) if n else None
    count = get()
    try:
        from threadpoolctl import threadpool_limits

        _blas_limit = threadpool_limits(limits=count)
    except ModuleNotFoundError:  # pragma: no cover - a dependency; absent only in odd installs
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)
    return count
