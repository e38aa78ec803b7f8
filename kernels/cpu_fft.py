"""The 2-D FFTs of iterative refinement on the CPU (the numpy twin of ``project_exit_waves_fft_order``): over the
last two axes, ``norm="ortho"``, with ``ptyfast.threads`` workers.

FFTW through pyFFTW's scipy.fft interface when pyFFTW is installed (``pip install "ptyfast[fftw]"``; FFTW is
GPL-licensed, so it is an opt-in extra), else ``scipy.fft`` (pocketfft). Measured here on a batch of 16
complex64 128² frames, one thread: FFTW 0.52–0.61 ms against pocketfft's 0.81–0.83 ms per transform of the
batch; an rPIE epoch on the Siemens star ≈ 10 % faster. Plans are ``FFTW_ESTIMATE`` (chosen without timing
runs, so a refinement gives the same result every run; ``FFTW_MEASURE`` would be ≈ 10 % faster still but
machine-load dependent) and cached per shape. FFTW's plans differ with the batch size, and so do its last
bits; the forward model, the simulation and the consistency figure therefore stay on scipy.fft, whose
result does not depend on how frames are batched. ``PTYFAST_FFT=scipy`` forces scipy.fft here too.
"""

from __future__ import annotations

import functools
import os

import scipy.fft

from ptyfast import threads


@functools.cache
def _fftw_module():
    """pyFFTW's scipy.fft interface, configured, or None; imported on the first transform (importing pyFFTW's
    interfaces imports Dask, ≈ 0.4 s that a reconstruction without refinement need not pay)."""
    if os.environ.get("PTYFAST_FFT", "").lower() == "scipy":
        return None
    try:
        import pyfftw
        import pyfftw.interfaces.cache
        import pyfftw.interfaces.scipy_fft
    except ImportError:
        return None
    pyfftw.config.PLANNER_EFFORT = "FFTW_ESTIMATE"
    pyfftw.interfaces.cache.enable()  # plans are reused while used (kept alive 30 s after the last use)
    pyfftw.interfaces.cache.set_keepalive_time(30.0)
    return pyfftw.interfaces.scipy_fft



def __getattr__(name: str):
    if name == "LIBRARY":  # the library computing the refinement's CPU FFTs: "fftw" or "scipy"
        return "fftw" if _fftw_module() is not None else "scipy"
    raise AttributeError(name)


def fft2(a, *, overwrite: bool = False):
    """``fft2(a, axes=(-2, -1), norm="ortho")``; complex64 in, complex64 out."""
    return (_fftw_module() or scipy.fft).fft2(a, axes=(-2, -1), norm="ortho", workers=threads.get(), overwrite_x=overwrite)


def ifft2(a, *, overwrite: bool = False):
    """``ifft2(a, axes=(-2, -1), norm="ortho")``; complex64 in, complex64 out."""
    return (_fftw_module() or scipy.fft).ifft2(a, axes=(-2, -1), norm="ortho", workers=threads.get(), overwrite_x=overwrite)
