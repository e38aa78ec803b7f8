"""GPU kernels (CUDA C for CuPy) and their numpy twins, dispatched on the array module.

Importing this package never imports CuPy: numpy arrays take the numpy twins, CuPy arrays the
CUDA kernels (compiled lazily on first use).
"""

from __future__ import annotations

from ptyfast.kernels import numpy_twins as _np_twins


def _is_cupy(a) -> bool:
    return type(a).__module__.startswith("cupy")


def gather(obj, positions, shape):
    """Object patches (N, H, W) at sub-pixel (y, x) positions; bilinear, zero outside the grid."""
    if _is_cupy(obj):
        from ptyfast.kernels import cupy_kernels

        return cupy_kernels.gather(obj, positions, shape)
    return _np_twins.gather(obj, positions, shape)


def overlap_add(accum, patches, positions):
    """Scatter-add patches into ``accum`` in place (adjoint of :func:`gather`)."""
    if _is_cupy(accum):
        from ptyfast.kernels import cupy_kernels

        return cupy_kernels.overlap_add(accum, patches, positions)
    return _np_twins.overlap_add(accum, patches, positions)


__all__ = ["gather", "overlap_add"]
