"""GPU kernels (CUDA C for CuPy) and their numpy twins, dispatched on the array module.

Importing this package never imports CuPy: numpy arrays take the numpy twins
(:mod:`ptyfast.kernels.numpy_twins`), CuPy arrays the CUDA kernels (:mod:`ptyfast.kernels.cupy_kernels`,
sources ``kernels/*.cu`` compiled lazily by :mod:`ptyfast.kernels.loader`, cached per device).

=======================  ==========================  ===============================================
function                 CUDA source / kernel        semantics
=======================  ==========================  ===============================================
gather                   gather.cu / gather_c64      bilinear sub-pixel patches, zero outside
exit_waves               gather.cu / exit_wave_c64   ψ = P · O_patch (fused with gather)
modulus_projection       modulus.cu                  Ψ' = √I Ψ/|Ψ| with mask; Σ(|Ψ|−√I)² per frame
project_exit_waves       cuFFT + modulus.cu          far field → project → back, shifts folded in
far_field/back_propagate cuFFT (cupy.fft)            the project's fftshift/ortho convention
overlap_add              overlap_add.cu              deterministic scatter-add (adjoint of gather)
stitch                   overlap_add.cu + normalise  Σ w·patch / Σ w with a relative floor
overlap_products         overlap_products.cu         Σ w_m w_k conj(p_m) p_k over each pair's overlap
=======================  ==========================  ===============================================

:func:`asnumpy` brings a result back to the host (numpy arrays as they are).
``project_exit_waves_fft_order`` is ``project_exit_waves`` against √I already in the FFT's pixel order.
On the CPU its FFTs are FFTW's when pyFFTW is installed, else scipy.fft's (:mod:`ptyfast.kernels.cpu_fft`).
"""

from __future__ import annotations

from ptyfast.kernels import numpy_twins as _np_twins
from ptyfast.kernels.numpy_twins import STITCH_FLOOR


def _is_cupy(a) -> bool:
    return type(a).__module__.startswith("cupy")


def _impl(a):
    if _is_cupy(a):
        from ptyfast.kernels import cupy_kernels

        return cupy_kernels
    return _np_twins


def gather(obj, positions, shape):
    """Object patches (N, H, W) at sub-pixel (y, x) positions; bilinear, zero outside the grid."""
    return _impl(obj).gather(obj, positions, shape)


def exit_waves(probe, obj, positions):
    """Exit waves ψ_n = P · O_n (N, H, W) for a batch of positions (gather fused with the product)."""
    return _impl(obj).exit_waves(probe, obj, positions)


def overlap_add(accum, patches, positions, *, weights=None, weight_accum=None):
    """Scatter-add (weighted) patches into ``accum`` in place (adjoint of :func:`gather`)."""
    return _impl(accum).overlap_add(accum, patches, positions, weights=weights, weight_accum=weight_accum)


def stitch(patches, weights, positions, object_shape, *, floor=STITCH_FLOOR):
    """``(Σ w·patch / max(Σ w, floor·max Σ w), Σ w)``: the stitched object and its weight map."""
    return _impl(patches).stitch(patches, weights, positions, object_shape, floor=floor)


def normalise(num, weight_map, *, floor=STITCH_FLOOR, out=None):
    """Divide an overlap-added numerator by its weight map with the stitch floor (into ``out`` when given)."""
    return _impl(num).normalise(num, weight_map, floor=floor, out=out)


def overlap_products(patches, rects, weight):
    """(P,) complex128 ``Σ w_m w_k conj(p_m) p_k`` over each pair's overlap rectangle; ``rects`` (P, 8) int rows
    (m, k, am, bm, ak, bk, oh, ow), ``weight`` (h, w) shared by the (N, h, w) patches."""
    return _impl(patches).overlap_products(patches, rects, weight)


def asnumpy(a):
    """``a`` on the host: a CuPy array copied back once, anything else as ``numpy.asarray`` gives it."""
    if _is_cupy(a):
        return a.get()
    import numpy

    return numpy.asarray(a)


def modulus_projection(psi, intensity, mask=None):
    """``(Ψ', err_per_frame)``: ``Ψ' = √I · Ψ/|Ψ|`` (masked pixels keep Ψ), err = Σ_valid (|Ψ| − √I)²."""
    return _impl(psi).modulus_projection(psi, intensity, mask)


def far_field(exit_wave):
    """``fftshift(fft2(ψ, norm="ortho"))`` over the last two axes."""
    return _impl(exit_wave).far_field(exit_wave)


def far_field_unshifted(exit_wave):
    """``fft2(ψ, norm="ortho")``: the far field with the zero frequency at the corner, for sums over the
    pixels (which do not depend on their order) without the cost of shifting complex data."""
    return _impl(exit_wave).far_field_unshifted(exit_wave)


def back_propagate(wave):
    """``ifft2(ifftshift(Ψ), norm="ortho")``, the inverse of :func:`far_field`."""
    return _impl(wave).back_propagate(wave)


def project_exit_waves(psi, intensity, mask=None):
    """``(ψ', err)`` with ``ψ' = back_propagate(modulus_projection(far_field(ψ), I, mask))``."""
    return _impl(psi).project_exit_waves(psi, intensity, mask)


def project_exit_waves_fft_order(psi, amplitude, mask=None):
    """:func:`project_exit_waves` against measured amplitudes √I and a mask already in the FFT's pixel order
    (``ifftshift`` of the centred frames): iterative solvers shift and square-root their frames once."""
    return _impl(psi).project_exit_waves_fft_order(psi, amplitude, mask)


__all__ = [
    "STITCH_FLOOR",
    "asnumpy",
    "back_propagate",
    "exit_waves",
    "far_field",
    "far_field_unshifted",
    "gather",
    "modulus_projection",
    "normalise",
    "overlap_add",
    "overlap_products",
    "project_exit_waves",
    "project_exit_waves_fft_order",
    "stitch",
]
