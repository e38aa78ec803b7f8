"""numpy twins of the CUDA kernels: same signatures and semantics, used on the CPU path.

Every function here has a CUDA counterpart in ``kernels/cupy_kernels.py`` (sources ``kernels/*.cu``);
``ptyfast.kernels`` dispatches on the array module. Keep the two in step: the GPU tests compare them.

Sub-pixel convention (gather and overlap_add are adjoint to each other):
a window at (y, x) = (y0 + fy, x0 + fx), y0 = floor(y), samples the object bilinearly,

    patch[i, j] = (1-fy)(1-fx) O[y0+i, x0+j] + (1-fy) fx O[y0+i, x0+j+1]
                + fy (1-fx) O[y0+i+1, x0+j] + fy fx O[y0+i+1, x0+j+1],

and object pixels outside the grid read as zero (writes there are dropped). Positions are (N, 2)
(y, x) in object pixels, the top-left corner of the window; fy, fx are float32.

Far-field convention (the project's, see ``ptyfast.physics.forward``):
``Ψ = fftshift(fft2(ψ, norm="ortho"))`` and its inverse ``ψ = ifft2(ifftshift(Ψ), norm="ortho")``.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from ptyfast import threads
from ptyfast.kernels import cpu_fft

#: Relative floor of :func:`stitch`: pixels whose summed weight is below ``floor * max(weight_map)``
#: are divided by that floor instead (so unvisited pixels come out 0, not NaN).
STITCH_FLOOR = 1e-6


def _split(positions):
    pos = np.asarray(positions, dtype=np.float64)
    base = np.floor(pos).astype(np.int64)
    frac = (pos - base).astype(np.float32)
    return base, frac


# --------------------------------------------------------------------------------------------- gather
def gather(obj, positions, shape):
    """Extract patches of ``obj`` at sub-pixel positions (bilinear, zero outside the object).

    Parameters
    ----------
    obj : (rows, cols) complex or real array
    positions : (N, 2) float, (y, x) top-left corners in object pixels, sub-pixel allowed
    shape : (H, W) patch shape

    Returns
    -------
    (N, H, W) array of ``obj.dtype``
    """
    h, w = shape
    base, frac = _split(positions)
    rows, cols = obj.shape
    if len(base) and base.min() >= 0 and base[:, 0].max() + h + 1 <= rows and base[:, 1].max() + w + 1 <= cols:
        return _gather_inside(obj, base, frac, h, w)
    rws = base[:, 0, None] + np.arange(h + 1)  # (N, H+1)
    cls = base[:, 1, None] + np.arange(w + 1)  # (N, W+1)
    rv = (rws >= 0) & (rws < rows)
    cv = (cls >= 0) & (cls < cols)
    win = obj[np.clip(rws, 0, rows - 1)[:, :, None], np.clip(cls, 0, cols - 1)[:, None, :]]
    win = win * (rv[:, :, None] & cv[:, None, :])
    fy = frac[:, 0, None, None]
    fx = frac[:, 1, None, None]
    top = (1 - fx) * win[:, :h, :w] + fx * win[:, :h, 1:]
    bottom = (1 - fx) * win[:, 1:, :w] + fx * win[:, 1:, 1:]
    return ((1 - fy) * top + fy * bottom).astype(obj.dtype, copy=False)


def _gather_inside(obj, base, frac, h, w):
    """:func:`gather` when every (H+1, W+1) window lies inside ``obj``: slices instead of fancy indexing
    (≈ 3× faster; the same bilinear weights, in the same precision)."""
    out = np.empty((len(base), h, w), obj.dtype)
    tmp = np.empty((h, w), obj.dtype)
    real = np.float32 if obj.dtype in (np.complex64, np.float32) else np.float64
    for k, ((y, x), (fy, fx)) in enumerate(zip(base.tolist(), frac.tolist())):
        win = obj[y : y + h + 1, x : x + w + 1]
        o = out[k]
        np.multiply(win[:h, :w], real((1 - fy) * (1 - fx)), out=o)
        for part, c in ((win[:h, 1:], (1 - fy) * fx), (win[1:, :w], fy * (1 - fx)), (win[1:, 1:], fy * fx)):
            np.multiply(part, real(c), out=tmp)
            o += tmp
    return out


def exit_waves(probe, obj, positions):
    """Exit waves ψ_n = P · O_n for a batch (the fused gather × probe kernel's twin).

    Parameters
    ----------
    probe : (H, W) complex
    obj : (rows, cols) complex
    positions : (N, 2) float (y, x)

    Returns
    -------
    (N, H, W) complex, ``result_type(probe, obj)``
    """
    patches = gather(obj, positions, probe.shape).astype(np.result_type(probe, obj), copy=False)
    patches *= probe[None]
    return patches


# ----------------------------------------------------------------------------------------- spreading
def spread(patches, positions):
    """Bilinear footprint of each patch on the integer grid: (N, H+1, W+1), adjoint of the interpolation."""
    n, h, w = patches.shape
    _, frac = _split(positions)
    fy = frac[:, 0, None, None]
    fx = frac[:, 1, None, None]
    out = np.zeros((n, h + 1, w + 1), dtype=patches.dtype)
    out[:, :h, :w] += (1 - fy) * (1 - fx) * patches
    out[:, :h, 1:] += (1 - fy) * fx * patches
    out[:, 1:, :w] += fy * (1 - fx) * patches
    out[:, 1:, 1:] += fy * fx * patches
    return out


class _Footprint:
    """Scratch buffers for one patch's bilinear footprint (kept small so they stay in cache)."""

    def __init__(self, h, w, dtype):
        self.t = np.zeros((h, w + 1), dtype)  # spread along x
        self.f = np.zeros((h + 1, w + 1), dtype)  # then along y
        self.tmp = np.empty((h, w + 1), dtype)

    def __call__(self, q, fy, fx):
        """Footprint (H+1, W+1) of ``q`` (H, W) at fractional offset (fy, fx); a view of scratch."""
        h, w = q.shape
        t, f, tmp = self.t, self.f, self.tmp
        np.multiply(q, 1 - fx, out=t[:, :w])
        t[:, w] = 0
        np.multiply(q, fx, out=tmp[:, :w])
        t[:, 1:] += tmp[:, :w]
        np.multiply(t, 1 - fy, out=f[:h])
        f[h] = 0
        np.multiply(t, fy, out=tmp)
        f[1:] += tmp
        return f


def _add_clipped(accum, tile, y0, x0):
    rows, cols = accum.shape
    hh, ww = tile.shape
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + hh, rows), min(x0 + ww, cols)
    if ye > ys and xe > xs:
        accum[ys:ye, xs:xe] += tile[ys - y0 : ye - y0, xs - x0 : xe - x0]


def overlap_add(accum, patches, positions, *, weights=None, weight_accum=None):
    """Scatter-add (weighted) patches into ``accum`` in place; the adjoint of :func:`gather`.

    ``accum += Σ_n spread(w_n · patch_n)`` and, when ``weight_accum`` is given,
    ``weight_accum += Σ_n spread(w_n)``, with ``spread`` the bilinear footprint (H+1, W+1) at each
    position. Deterministic (patches are added in index order). Writes outside ``accum`` are dropped.

    Parameters
    ----------
    accum : (rows, cols) complex or real array, updated in place
    patches : (N, H, W) array
    positions : (N, 2) float (y, x)
    weights : None (all ones), (H, W) shared, or (N, H, W) per-patch real weights
    weight_accum : None or (rows, cols) real array, updated in place

    Returns
    -------
    accum
    """
    patches = np.asarray(patches)
    n, h, w = patches.shape
    base, frac = _split(positions)
    if n == 0:
        return accum
    rows, cols = accum.shape
    visible = (base[:, 0] > -h - 1) & (base[:, 0] < rows) & (base[:, 1] > -w - 1) & (base[:, 1] < cols)
    if weights is not None:
        weights = np.asarray(weights)
        rdt = np.result_type(weights.dtype, np.float32)
        if np.dtype(rdt).itemsize > np.dtype(patches.real.dtype).itemsize:
            rdt = patches.real.dtype
        weights = weights.astype(rdt, copy=False)
    qdt = np.result_type(patches.dtype, accum.dtype) if accum.dtype.kind == "c" else patches.dtype
    fp = _Footprint(h, w, qdt)
    wfp = None
    if weight_accum is not None:
        wdt = weights.dtype if weights is not None else patches.real.dtype
        wfp = _Footprint(h, w, wdt)
        ones = np.ones((h, w), wdt)
    q = np.empty((h, w), qdt) if weights is not None else None
    for k in np.flatnonzero(visible):
        y0, x0 = int(base[k, 0]), int(base[k, 1])
        fy, fx = frac[k, 0], frac[k, 1]
        wk = None if weights is None else (weights if weights.ndim == 2 else weights[k])
        if wk is None:
            src = patches[k]
        else:
            np.multiply(patches[k], wk, out=q)
            src = q
        _add_clipped(accum, fp(src, fy, fx), y0, x0)
        if wfp is not None:
            _add_clipped(weight_accum, wfp(ones if wk is None else wk, fy, fx), y0, x0)
    return accum


def stitch(patches, weights, positions, object_shape, *, floor=STITCH_FLOOR):
    """Stitch weighted patches into one object: ``Σ w·patch / Σ w`` with a relative floor.

    ``object = num / maximum(weight_map, floor * max(weight_map))`` where ``num`` and ``weight_map``
    are the overlap-adds of ``w·patch`` and ``w`` (bilinear footprints, see :func:`overlap_add`).
    Unvisited pixels (weight 0) come out exactly 0; pixels whose weight is below the floor are damped
    rather than amplified.

    Parameters
    ----------
    patches : (N, H, W) complex or real
    weights : None (uniform), (H, W) or (N, H, W) real, non-negative (e.g. ``|P|²``)
    positions : (N, 2) float (y, x)
    object_shape : (rows, cols)
    floor : float, relative to ``max(weight_map)``

    Returns
    -------
    object : (rows, cols), ``patches.dtype``
    weight_map : (rows, cols) real (float32 for complex64 patches)
    """
    patches = np.asarray(patches)
    rdt = patches.real.dtype
    num = np.zeros(tuple(object_shape), patches.dtype)
    wmap = np.zeros(tuple(object_shape), rdt)
    overlap_add(num, patches, positions, weights=weights, weight_accum=wmap)
    return normalise(num, wmap, floor=floor), wmap


def normalise(num, weight_map, *, floor=STITCH_FLOOR, out=None):
    """``num / maximum(weight_map, max(floor * max(weight_map), tiny))``: 0 where nothing was added; into
    ``out`` when given (may be ``num``), a block of rows at a time, so no object-sized temporary is made.

    Parameters
    ----------
    num : (rows, cols) overlap-added ``w · patch``
    weight_map : (rows, cols) real overlap-added weights
    floor : float, relative to ``max(weight_map)``; ``tiny`` is the dtype's smallest normal number

    Returns
    -------
    (rows, cols) array of ``num.dtype``
    """
    top = float(weight_map.max()) if weight_map.size else 0.0
    tiny = np.finfo(weight_map.dtype).tiny
    low = np.asarray(max(floor * top, tiny), weight_map.dtype)
    out = np.empty_like(num) if out is None else out
    for r in range(0, len(num), 256):
        np.divide(num[r : r + 256], np.maximum(weight_map[r : r + 256], low), out=out[r : r + 256])
    return out


def overlap_products(patches, rects, weight):
    """Weighted inner products of overlapping patch pairs (the overlap matrix's entries, one per pair).

    ``H_j = Σ conj(p_m[am:am+oh, bm:bm+ow]) · p_k[ak:ak+oh, bk:bk+ow] · w[am:…, bm:…] · w[ak:…, bk:…]``,
    each pair's sum one ``np.vdot`` in the patches' precision.

    Parameters
    ----------
    patches : (N, h, w) complex64
    rects : (P, 8) int, per pair (m, k, am, bm, ak, bk, oh, ow): the patches' rows, the overlap's top-left
        corner (y, x) in window m and in window k, its size (rows, cols); it must lie inside both windows
    weight : (h, w) real, shared by every window

    Returns
    -------
    (P,) complex128
    """
    weight = np.asarray(weight, np.float32)
    out = np.empty(len(rects), np.complex128)
    both: dict = {}  # w_m · w_k per rectangle pair (one per rounded relative shift)
    for j, (m, k, am, bm, ak, bk, oh, ow) in enumerate(np.asarray(rects).reshape(-1, 8).tolist()):
        key = (am, bm, ak, bk, oh, ow)
        b = both.get(key)
        if b is None:
            b = both[key] = (weight[am : am + oh, bm : bm + ow] * weight[ak : ak + oh, bk : bk + ow]).astype(
                np.complex64)
        out[j] = np.vdot(patches[m, am : am + oh, bm : bm + ow], patches[k, ak : ak + oh, bk : bk + ow] * b)
    return out


# ------------------------------------------------------------------------------- propagation, projection
def far_field(exit_wave):
    """``fftshift(fft2(ψ, norm="ortho"))`` over the last two axes (scipy.fft: the same result whatever the batch
    size, so a scan simulated frame by frame equals the one simulated at once)."""
    return np.fft.fftshift(scipy.fft.fft2(exit_wave, axes=(-2, -1), norm="ortho", workers=threads.get()), axes=(-2, -1))


def far_field_unshifted(exit_wave):
    """``fft2(ψ, norm="ortho")``: :func:`far_field` with the zero frequency left at the corner."""
    return scipy.fft.fft2(exit_wave, axes=(-2, -1), norm="ortho", workers=threads.get())


def back_propagate(wave):
    """``ifft2(ifftshift(Ψ), norm="ortho")``, the inverse of :func:`far_field`."""
    return scipy.fft.ifft2(np.fft.ifftshift(wave, axes=(-2, -1)), axes=(-2, -1), norm="ortho", workers=threads.get())


def _mask_array(mask, shape):
    if mask is None:
        return None
    m = np.asarray(mask, dtype=bool)
    if m.shape != shape[-2:] and m.shape != shape:
        raise ValueError(
            f"mask has shape {m.shape}; expected {shape[-2:]} (one detector mask) or {shape} (one per frame)"
        )
    return m


def _checked(psi, measured, mask, name: str, of: str):
    """``psi`` and the measured array as arrays and the mask as a bool array or None; one error naming the
    mismatch when their shapes differ."""
    psi, measured = np.asarray(psi), np.asarray(measured)
    if measured.shape != psi.shape:
        raise ValueError(f"{name} has shape {measured.shape}; expected {of} shape {psi.shape}")
    return psi, measured, _mask_array(mask, psi.shape)


def _amplitude(intensity, dtype):
    """√I with negative counts as 0, in ``dtype``."""
    s = np.maximum(intensity, 0).astype(dtype)
    return np.sqrt(s, out=s)


def _project(psi, amplitude, mask, out):
    """Modulus projection of ``psi`` against the measured ``amplitude`` √I (same pixel order) into ``out``
    (may be ``psi``); returns err per frame (float64)."""
    amp = np.abs(psi)
    d = amp - amplitude
    d *= d
    if mask is not None:
        d *= np.broadcast_to(mask, d.shape)
    err = d.reshape(d.shape[0], -1).sum(axis=1, dtype=np.float64)
    zero = None
    if amp.size and amp.min() > 0:  # the usual case: one plain division
        np.divide(amplitude, amp, out=amp)  # amp becomes the scale √I / |Ψ|
    else:
        zero = amp == 0
        np.divide(amplitude, amp, out=amp, where=~zero)
    if mask is not None:
        np.copyto(amp, 1, where=~mask)  # masked pixels keep Ψ
        if zero is not None:
            zero &= mask
    np.multiply(psi, amp, out=out)
    if zero is not None and zero.any():
        out[zero] = np.broadcast_to(amplitude, zero.shape)[zero]
    return err


def modulus_projection(psi, intensity, mask=None):
    """Replace the far-field modulus by the measured one: ``Ψ' = √I · Ψ / |Ψ|``.

    Where ``|Ψ| == 0`` the result is ``√I`` (zero phase). Negative intensities count as 0. Masked
    pixels (``mask == False``) keep ``Ψ`` and do not count in the error.

    Parameters
    ----------
    psi : (N, H, W) complex, far field in the project's centred convention
    intensity : (N, H, W) real, measured intensity (photons), zero frequency at (H//2, W//2)
    mask : None, (H, W) or (N, H, W) bool, True where the detector pixel is valid

    Returns
    -------
    psi_new : (N, H, W), ``psi.dtype``
    err_per_frame : (N,) real (float32 for complex64): Σ over valid pixels of (|Ψ| − √I)²
    """
    psi, intensity, m = _checked(psi, intensity, mask, "intensity", "the far field's")
    out = np.empty_like(psi)
    err = _project(psi, _amplitude(intensity, psi.real.dtype), m, out)
    return out, err.astype(psi.real.dtype)


def project_exit_waves(psi, intensity, mask=None):
    """One far-field constraint step on exit waves: propagate, project the modulus, propagate back.

    ``ψ' = back_propagate(modulus_projection(far_field(ψ), I, mask))``. The fftshifts are folded into
    the (cheaper) intensity and mask: ``fft2`` output is projected against ``ifftshift(I)``.

    Parameters
    ----------
    psi : (N, H, W) complex exit waves
    intensity : (N, H, W) real measured intensities (centred convention)
    mask : None, (H, W) or (N, H, W) bool

    Returns
    -------
    psi_new : (N, H, W) complex exit waves
    err_per_frame : (N,) real, as :func:`modulus_projection`
    """
    psi, intensity, m = _checked(psi, intensity, mask, "intensity", "the exit waves'")
    amplitude = np.fft.ifftshift(_amplitude(intensity, psi.real.dtype), axes=(-2, -1))
    return project_exit_waves_fft_order(psi, amplitude, None if m is None else np.fft.ifftshift(m, axes=(-2, -1)))


def project_exit_waves_fft_order(psi, amplitude, mask=None):
    """:func:`project_exit_waves` against measured *amplitudes* √I already in the FFT's pixel order (zero
    frequency at the corner, ``ifftshift`` of the centred frames), as is ``mask``: for iterative solvers,
    which project against the same frames every epoch and so shift and square-root them once. Its FFTs are
    :mod:`ptyfast.kernels.cpu_fft`'s (FFTW when installed: the refinement's hot loop).

    Returns
    -------
    psi_new : (N, H, W) complex exit waves
    err_per_frame : (N,) real, Σ over valid pixels of (|Ψ| − √I)²
    """
    psi, amplitude, m = _checked(psi, amplitude, mask, "amplitude", "the exit waves'")
    big = cpu_fft.fft2(psi)
    err = _project(big, amplitude, m, big)
    return cpu_fft.ifft2(big, overwrite=True), err.astype(psi.real.dtype)
