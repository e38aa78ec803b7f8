"""CuPy wrappers of the CUDA kernels in ``kernels/*.cu`` (complex64 / float32 on the device).

Imported only when a CuPy array reaches :mod:`ptyfast.kernels` (it imports CuPy). Each function has
the signature and semantics of its numpy twin in :mod:`ptyfast.kernels.numpy_twins`; the launch
geometry is documented in the ``.cu`` headers. Positions may be numpy or CuPy arrays; the kernels
read them as float64. Complex inputs must be complex64 (the kernels' float2): other dtypes raise a
TypeError that says how to convert, rather than silently losing precision.
"""

from __future__ import annotations

import cupy
import cupyx.scipy.fft as cufft
import numpy as np

from ptyfast.kernels.binning import bin_positions
from ptyfast.kernels.loader import get_function
from ptyfast.kernels.numpy_twins import STITCH_FLOOR

_BLOCK2D = (32, 8, 1)
_MAX_GRID_Z = 65535
_MP_BLOCK = 256  # PTF_MP_BLOCK in modulus.cu
_OP_BLOCK = 256  # PTF_OP_BLOCK in overlap_products.cu


def _i32(v) -> np.int32:
    return np.int32(int(v))


def _c64(a, name: str):
    if a.dtype != cupy.complex64:
        raise TypeError(
            f"{name} has dtype {a.dtype}; the CUDA kernels take complex64. Convert with "
            f"{name}.astype(cupy.complex64), or pass numpy arrays for the CPU twins (any dtype)."
        )
    return cupy.ascontiguousarray(a)


def _positions(positions, n=None):
    pos = cupy.ascontiguousarray(cupy.asarray(positions, dtype=cupy.float64)).reshape(-1, 2)
    if n is not None and pos.shape[0] != n:
        raise ValueError(f"positions has {pos.shape[0]} rows; expected one (y, x) per patch ({n})")
    return pos


def _host_positions(positions):
    if isinstance(positions, cupy.ndarray):
        return positions.get()
    return np.asarray(positions)


def _launch_frames(kernel, n, h, w, make_args):
    """Launch a (32, 8) x frames kernel in chunks of at most 65535 frames (gridDim.z limit)."""
    gx, gy = (w + _BLOCK2D[0] - 1) // _BLOCK2D[0], (h + _BLOCK2D[1] - 1) // _BLOCK2D[1]
    for s in range(0, n, _MAX_GRID_Z):
        e = min(n, s + _MAX_GRID_Z)
        kernel((gx, gy, e - s), _BLOCK2D, make_args(s, e))


def gather(obj, positions, shape):
    """Patches (N, H, W) complex64 at sub-pixel positions (bilinear, zero outside); see the twin."""
    obj = _c64(obj, "obj")
    h, w = (int(v) for v in shape)
    pos = _positions(positions)
    n = pos.shape[0]
    out = cupy.empty((n, h, w), cupy.complex64)
    rows, cols = obj.shape
    k = get_function("gather", "gather_c64")
    _launch_frames(
        k, n, h, w,
        lambda s, e: (obj, _i32(rows), _i32(cols), pos[s:e], _i32(e - s), _i32(h), _i32(w), out[s:e]),
    )
    return out


def exit_waves(probe, obj, positions):
    """ψ_n = P · O_n (N, H, W) complex64, gather fused with the probe product; see the twin."""
    probe = _c64(probe, "probe")
    obj = _c64(obj, "obj")
    h, w = probe.shape
    pos = _positions(positions)
    n = pos.shape[0]
    out = cupy.empty((n, h, w), cupy.complex64)
    rows, cols = obj.shape
    k = get_function("gather", "exit_wave_c64")
    _launch_frames(
        k, n, h, w,
        lambda s, e: (probe, obj, _i32(rows), _i32(cols), pos[s:e], _i32(e - s), _i32(h), _i32(w), out[s:e]),
    )
    return out


def _mask_args(mask, shape):
    if mask is None:
        return cupy.zeros(1, cupy.uint8), 0
    m = cupy.ascontiguousarray(cupy.asarray(mask).astype(cupy.uint8, copy=False))
    if m.shape == tuple(shape[-2:]):
        return m, 1
    if m.shape == tuple(shape):
        return m, 2
    raise ValueError(f"mask has shape {m.shape}; expected {shape[-2:]} (one detector mask) or {shape} (per frame)")


def _project(psi, intensity, mask, out, unshifted):
    n, h, w = psi.shape
    if intensity.shape != psi.shape:
        raise ValueError(f"intensity has shape {intensity.shape}; expected {psi.shape}")
    inten = cupy.ascontiguousarray(intensity, dtype=cupy.float32)
    m, mode = _mask_args(mask, psi.shape)
    err = cupy.empty(n, cupy.float32)
    if n:
        k = get_function("modulus", "modulus_projection_c64")
        k((n, 1, 1), (_MP_BLOCK, 1, 1),
          (psi, inten, m, _i32(mode), _i32(n), _i32(h), _i32(w), _i32(unshifted), out, err))
    return err


def modulus_projection(psi, intensity, mask=None):
    """``Ψ' = √I · Ψ / |Ψ|`` with mask, and Σ (|Ψ| − √I)² per frame; see the twin."""
    psi = _c64(psi, "psi")
    out = cupy.empty_like(psi)
    err = _project(psi, intensity, mask, out, 0)
    return out, err


def project_exit_waves(psi, intensity, mask=None):
    """fft2 (cuFFT, cached plan) → modulus projection on the unshifted spectrum → ifft2; see the twin.

    The fftshift/ifftshift pair is folded into the projection kernel's indexing (``unshifted=1``),
    and the inverse FFT runs in place, so the batch is touched by 2 FFTs and one elementwise pass.
    """
    psi = _c64(psi, "psi")
    big = cufft.fft2(psi, axes=(-2, -1), norm="ortho")
    err = _project(big, intensity, mask, big, 1)
    return cufft.ifft2(big, axes=(-2, -1), norm="ortho", overwrite_x=True), err


def project_exit_waves_fft_order(psi, amplitude, mask=None):
    """:func:`project_exit_waves` against amplitudes √I (and a mask) already in the FFT's pixel order; see
    the twin. The modulus kernel takes intensities, so it gets the amplitudes squared (one elementwise pass)."""
    psi = _c64(psi, "psi")
    big = cufft.fft2(psi, axes=(-2, -1), norm="ortho")
    err = _project(big, cupy.square(cupy.asarray(amplitude, dtype=cupy.float32)), mask, big, 0)
    return cufft.ifft2(big, axes=(-2, -1), norm="ortho", overwrite_x=True), err


def overlap_add(accum, patches, positions, *, weights=None, weight_accum=None, bin_size=None):
    """Deterministic overlap-add of (weighted) patches into ``accum`` (and ``weight_accum``) in place.

    Same semantics as the twin; ``accum`` complex64 (rows, cols), or float32 with real patches (e.g. rPIE's
    Σ|P|² map: the complex kernel runs on a scratch grid whose real part is added), ``weight_accum`` float32.
    The bin index is built on the host from the positions (see :mod:`ptyfast.kernels.binning`).
    """
    if accum.dtype == cupy.float32 and accum.flags.c_contiguous:
        if cupy.iscomplexobj(patches):
            raise TypeError("a float32 accum takes real patches; use a complex64 accum for complex ones")
        scratch = cupy.zeros(accum.shape, cupy.complex64)
        overlap_add(scratch, cupy.asarray(patches).astype(cupy.complex64), positions, weights=weights,
                    weight_accum=weight_accum, bin_size=bin_size)
        accum += scratch.real
        return accum
    if accum.dtype != cupy.complex64 or not accum.flags.c_contiguous:
        raise TypeError(f"accum must be a C-contiguous complex64 or float32 CuPy array (got {accum.dtype}); it is "
                        "updated in place")
    patches = _c64(patches, "patches")
    n, h, w = patches.shape
    pos = _positions(positions, n)
    rows, cols = accum.shape
    idx = bin_positions(_host_positions(positions), (h, w), (rows, cols), bin_size=bin_size)
    if idx.empty:
        return accum
    if weights is None:
        wts, mode = cupy.zeros(1, cupy.float32), 0
    else:
        wts = cupy.ascontiguousarray(cupy.asarray(weights, dtype=cupy.float32))
        if wts.shape == (h, w):
            mode = 1
        elif wts.shape == (n, h, w):
            mode = 2
        else:
            raise ValueError(f"weights has shape {wts.shape}; expected {(h, w)} or {(n, h, w)}")
    if weight_accum is None:
        wacc, use_wacc = cupy.zeros(1, cupy.float32), 0
    else:
        if weight_accum.dtype != cupy.float32 or weight_accum.shape != accum.shape or not weight_accum.flags.c_contiguous:
            raise TypeError(f"weight_accum must be a C-contiguous float32 CuPy array of shape {accum.shape}")
        wacc, use_wacc = weight_accum, 1
    k = get_function("overlap_add", "overlap_add_c64")
    grid = ((idx.nc + _BLOCK2D[0] - 1) // _BLOCK2D[0], (idx.nr + _BLOCK2D[1] - 1) // _BLOCK2D[1], 1)
    k(grid, _BLOCK2D, (
        accum, wacc, _i32(use_wacc), _i32(rows), _i32(cols), patches, wts, _i32(mode), pos,
        _i32(n), _i32(h), _i32(w), cupy.asarray(idx.bin_start), cupy.asarray(idx.bin_items),
        _i32(idx.by0), _i32(idx.bx0), _i32(idx.bsy), _i32(idx.bsx), _i32(idx.nby), _i32(idx.nbx),
        _i32(idx.r0), _i32(idx.c0), _i32(idx.nr), _i32(idx.nc),
    ))
    return accum


def normalise(num, weight_map, *, floor=STITCH_FLOOR, out=None):
    """``num / maximum(weight_map, max(floor · max(weight_map), tiny))`` on the device (no host sync), into
    ``out`` when given (may be ``num``)."""
    tiny = np.finfo(np.float32).tiny
    den = cupy.maximum(weight_map, cupy.maximum(weight_map.max() * np.float32(floor), np.float32(tiny)))
    if out is None:
        return (num / den).astype(num.dtype, copy=False)
    return cupy.divide(num, den, out=out)


def stitch(patches, weights, positions, object_shape, *, floor=STITCH_FLOOR):
    """Σ w·patch / Σ w with a relative floor → (object complex64, weight_map float32); see the twin."""
    num = cupy.zeros(tuple(object_shape), cupy.complex64)
    wmap = cupy.zeros(tuple(object_shape), cupy.float32)
    overlap_add(num, patches, positions, weights=weights, weight_accum=wmap)
    return normalise(num, wmap, floor=floor), wmap


def overlap_products(patches, rects, weight):
    """Weighted inner products of overlapping patch pairs (P,) complex128, one block per pair (sums in double);
    see the twin. ``rects`` (P, 8) and ``weight`` (h, w) may be numpy or CuPy arrays."""
    patches = _c64(patches, "patches")
    n, h, w = patches.shape
    r = cupy.ascontiguousarray(cupy.asarray(rects, dtype=cupy.int32)).reshape(-1, 8)
    wt = cupy.ascontiguousarray(cupy.asarray(weight, dtype=cupy.float32))
    if wt.shape != (h, w):
        raise ValueError(f"weight has shape {wt.shape}; expected the windows' {(h, w)}")
    out = cupy.empty(r.shape[0], cupy.complex128)
    if r.shape[0]:
        k = get_function("overlap_products", "overlap_products_c64")
        k((r.shape[0], 1, 1), (_OP_BLOCK, 1, 1), (patches, _i32(h), _i32(w), wt, r, _i32(r.shape[0]), out))
    return out


def far_field(exit_wave):
    """``fftshift(fft2(ψ, norm="ortho"))`` over the last two axes (cuFFT through cupyx.scipy.fft, plan cache)."""
    return cupy.fft.fftshift(cufft.fft2(exit_wave, axes=(-2, -1), norm="ortho"), axes=(-2, -1))


def far_field_unshifted(exit_wave):
    """``fft2(ψ, norm="ortho")`` (cuFFT): :func:`far_field` with the zero frequency left at the corner."""
    return cufft.fft2(exit_wave, axes=(-2, -1), norm="ortho")


def back_propagate(wave):
    """``ifft2(ifftshift(Ψ), norm="ortho")``, the inverse of :func:`far_field`."""
    return cufft.ifft2(cupy.fft.ifftshift(wave, axes=(-2, -1)), axes=(-2, -1), norm="ortho")
