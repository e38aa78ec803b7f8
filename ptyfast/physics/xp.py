"""Array-module helpers: pick numpy or CuPy from the arrays themselves (never a global default)."""

from __future__ import annotations

import numpy as np


def get_array_module(*arrays):
    """``cupy`` if any argument is a CuPy array, else ``numpy``. Never imports CuPy eagerly."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy

            return cupy
    return np


def fft_module(xp):
    """scipy.fft for numpy (multi-threaded, plan cache), cupy.fft (cuFFT, plan cache) for CuPy."""
    if xp is np:
        import scipy.fft

        return scipy.fft
    return xp.fft


def fft_workers(xp) -> dict:
    """``scipy.fft`` workers: the process's thread setting (:mod:`ptyfast.threads`); CuPy takes none."""
    from ptyfast import threads

    return {"workers": threads.get()} if xp is np else {}
