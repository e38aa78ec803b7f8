"""Compile every ``kernels/*.cu`` without a GPU, and run the kernels' per-thread code on the CPU.

* ``nvcc -ptx`` for sm_80 (A100) and sm_90 (H100): a syntax or type error fails CI (skipped, with
  the reason, when nvcc is absent). CUDA 13 dropped the pre-Turing targets, so sm_80/sm_90 it is;
  the sources include no headers (complex values are ``float2``), so no ``-I`` flags are needed.
* NVRTC through CuPy's compiler (the path ``kernels/loader.py`` takes at run time), when CuPy and
  an NVRTC library are importable; NVRTC needs no device.
* Host emulation: the kernels' ``__host__ __device__`` per-thread functions are compiled by nvcc
  into a host shared library and run, thread by thread, against the numpy twins. This checks the
  index arithmetic, the bin index walk and the edge handling of the CUDA code without a GPU (not
  the launch geometry, the shared-memory reduction or memory coherence: those need the GPU tests).
"""

from __future__ import annotations

import ctypes
import subprocess

import numpy as np
import pytest

from ptyfast.kernels import numpy_twins as tw
from ptyfast.kernels.binning import bin_positions
from ptyfast.kernels.loader import NVRTC_OPTIONS, cu_files, source

from cuda_helpers import NVCC, host_library

needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH: cannot compile the CUDA sources")
CU = cu_files()


def test_kernel_sources_exist():
    assert {p.stem for p in CU} >= {"gather", "modulus", "overlap_add"}


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("cu", CU, ids=[p.name for p in CU])
def test_nvcc_ptx(cu, arch, tmp_path):
    out = tmp_path / f"{cu.stem}.ptx"
    res = subprocess.run([NVCC, "-ptx", f"-arch={arch}", *NVRTC_OPTIONS, "-Werror", "all-warnings",
                          "-o", str(out), str(cu)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert ".entry" in out.read_text()


@pytest.mark.parametrize("cu", CU, ids=[p.name for p in CU])
def test_nvrtc_compiles_loader_source(cu):
    compiler = pytest.importorskip("cupy.cuda.compiler", reason="CuPy not installed: NVRTC path not checked")
    try:
        prog = compiler._NVRTCProgram(source(cu.stem), name=cu.name)
        ptx, _ = prog.compile(options=(*NVRTC_OPTIONS, "-arch=compute_90"))
    except (OSError, RuntimeError, ImportError, AttributeError) as exc:  # no libnvrtc / changed CuPy internals
        if isinstance(exc, compiler.CompileException):
            raise
        pytest.skip(f"NVRTC not usable here ({type(exc).__name__}: {exc})")
    assert ".entry" in (ptx.decode() if isinstance(ptx, bytes) else ptx)


def test_nvrtc_errors_point_at_the_cu_file():
    compiler = pytest.importorskip("cupy.cuda.compiler", reason="CuPy not installed: NVRTC path not checked")
    bad = source("gather").replace("return win;", "return win", 1)
    try:
        with pytest.raises(compiler.CompileException, match=r"gather\.cu\(\d+\)"):
            compiler._NVRTCProgram(bad, name="gather.cu").compile(options=(*NVRTC_OPTIONS, "-arch=compute_90"))
    except (OSError, RuntimeError, ImportError) as exc:
        pytest.skip(f"NVRTC not usable here ({type(exc).__name__}: {exc})")


# ------------------------------------------------------------------------------- host emulation
HARNESS = r"""
#include "gather.cu"
#include "modulus.cu"
#include "overlap_add.cu"

extern "C" void h_gather(const float2* obj, int rows, int cols, const double* pos, int n, int h, int w, float2* out) {
    for (long long k = 0; k < n; ++k) for (int i = 0; i < h; ++i) for (int j = 0; j < w; ++j)
        out[(k * h + i) * w + j] = ptf_gather_pixel(obj, rows, cols, pos, k, i, j);
}
extern "C" void h_exit_wave(const float2* probe, const float2* obj, int rows, int cols, const double* pos, int n,
                            int h, int w, float2* out) {
    for (long long k = 0; k < n; ++k) for (int i = 0; i < h; ++i) for (int j = 0; j < w; ++j)
        out[(k * h + i) * w + j] = ptf_exit_wave_pixel(probe, obj, rows, cols, pos, k, h, w, i, j);
}
extern "C" void h_modulus(const float2* psi, const float* inten, const unsigned char* mask, int mode, int n, int h,
                          int w, int unshifted, float2* out, float* err) {
    for (long long k = 0; k < n; ++k) {
        double acc = 0.0;
        for (int q = 0; q < h * w; ++q)
            out[k * h * w + q] = ptf_modulus_pixel(psi, inten, mask, mode, k, h, w, unshifted, q, &acc);
        err[k] = (float)acc;
    }
}
extern "C" void h_overlap_add(float2* accum, float* wacc, int use_wacc, int rows, int cols, const float2* patches,
                              const float* weights, int mode, const double* pos, int n, int h, int w,
                              const int* bs, const int* bi, int by0, int bx0, int bsy, int bsx, int nby, int nbx,
                              int r0, int c0, int nr, int nc) {
    for (int ty = 0; ty < nr + 8; ++ty) for (int tx = 0; tx < nc + 32; ++tx)  // overhanging threads too
        ptf_overlap_add_thread(accum, wacc, use_wacc, rows, cols, patches, weights, mode, pos, n, h, w, bs, bi,
                               by0, bx0, bsy, bsx, nby, nbx, r0, c0, nr, nc, tx, ty);
}
"""


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory):
    return host_library(tmp_path_factory.mktemp("cuda_host"), HARNESS, "ptf_host", CU[0].parent)


def _p(a):
    return a.ctypes.data_as(ctypes.c_void_p)


I = ctypes.c_int


def crandn(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def poisoned(shape, dtype):
    return np.full(shape, np.nan, dtype)


def _positions(rng, rows, cols, h, w, n):
    pos = np.column_stack([rng.uniform(-h - 2, rows + 1, n), rng.uniform(-w - 2, cols + 1, n)])
    pos[:3] = [[-0.5, 3.25], [rows - h + 0.75, cols - w + 0.5], [3.0, -2.0]]
    return pos


def test_host_gather_and_exit_wave(host_lib):
    rng = np.random.default_rng(0)
    obj, probe = crandn(rng, (33, 35)), crandn(rng, (9, 11))
    pos = _positions(rng, 33, 35, 9, 11, 20)
    out = poisoned((20, 9, 11), np.complex64)
    host_lib.h_gather(_p(obj), I(33), I(35), _p(pos), I(20), I(9), I(11), _p(out))
    np.testing.assert_allclose(out, tw.gather(obj, pos, (9, 11)), rtol=1e-5, atol=1e-6)
    host_lib.h_exit_wave(_p(probe), _p(obj), I(33), I(35), _p(pos), I(20), I(9), I(11), _p(out))
    np.testing.assert_allclose(out, tw.exit_waves(probe, obj, pos), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("shape", [(8, 8), (7, 10)])
def test_host_modulus(host_lib, mode, shape):
    rng = np.random.default_rng(1)
    n = 3
    psi = crandn(rng, (n, *shape))
    psi[0, 0, 0] = 0
    inten = rng.uniform(-0.1, 4, psi.shape).astype(np.float32)
    mask = None if mode == 0 else (rng.random(shape if mode == 1 else psi.shape) > 0.3)
    m8 = np.zeros(1, np.uint8) if mask is None else mask.astype(np.uint8)
    out, err = poisoned(psi.shape, np.complex64), poisoned(n, np.float32)
    host_lib.h_modulus(_p(psi), _p(inten), _p(m8), I(mode), I(n), I(shape[0]), I(shape[1]), I(0), _p(out), _p(err))
    ref, rerr = tw.modulus_projection(psi, inten, mask)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(err, rerr, rtol=1e-5)
    # unshifted = 1: raw fft2 output against the centred intensity == the fused twin
    raw = np.fft.fft2(psi, norm="ortho").astype(np.complex64)
    host_lib.h_modulus(_p(raw), _p(inten), _p(m8), I(mode), I(n), I(shape[0]), I(shape[1]), I(1), _p(out), _p(err))
    ref2, rerr2 = tw.modulus_projection(np.fft.fftshift(raw, axes=(-2, -1)), inten, mask)
    np.testing.assert_allclose(np.fft.fftshift(out, axes=(-2, -1)), ref2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(err, rerr2, rtol=1e-5)


@pytest.mark.parametrize("wkind", ["none", "shared", "per_patch"])
@pytest.mark.parametrize("bin_size", [None, (1, 1), (50, 50)])
def test_host_overlap_add(host_lib, wkind, bin_size):
    rng = np.random.default_rng(2)
    rows, cols, h, w, n = 37, 41, 10, 12, 40
    pos = _positions(rng, rows, cols, h, w, n)
    patches = crandn(rng, (n, h, w))
    weights = {"none": None, "shared": rng.uniform(0.1, 2, (h, w)).astype(np.float32),
               "per_patch": rng.uniform(0.1, 2, (n, h, w)).astype(np.float32)}[wkind]
    mode = {"none": 0, "shared": 1, "per_patch": 2}[wkind]
    start, wstart = crandn(rng, (rows, cols)), rng.uniform(0, 1, (rows, cols)).astype(np.float32)
    acc, wacc = start.copy(), wstart.copy()
    idx = bin_positions(pos, (h, w), (rows, cols), bin_size=bin_size)
    wts = np.zeros(1, np.float32) if weights is None else weights
    host_lib.h_overlap_add(_p(acc), _p(wacc), I(1), I(rows), I(cols), _p(patches), _p(wts), I(mode), _p(pos), I(n),
                           I(h), I(w), _p(idx.bin_start), _p(idx.bin_items), I(idx.by0), I(idx.bx0), I(idx.bsy),
                           I(idx.bsx), I(idx.nby), I(idx.nbx), I(idx.r0), I(idx.c0), I(idx.nr), I(idx.nc))
    ref, wref = start.copy(), wstart.copy()
    tw.overlap_add(ref, patches, pos, weights=weights, weight_accum=wref)
    np.testing.assert_allclose(acc, ref, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(wacc, wref, rtol=1e-5, atol=2e-5)
