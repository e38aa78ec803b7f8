"""The far-field forward model (implemented once per array library in :mod:`ptyfast.kernels`).

Convention (the whole project):

    Psi = fftshift(fft2(P * O[y:y+H, x:x+W], norm="ortho")),   I = |Psi|^2

so that sum(I) = sum(|P * O_patch|^2) (Parseval): a probe normalised to ``sum(|P|^2) = n`` photons
gives at most ``n`` photons per frame. Axis order is (..., row=y, col=x); the zero frequency sits at
index (H//2, W//2) after the fftshift.
"""

from __future__ import annotations

from ptyfast.kernels import back_propagate, exit_waves, far_field  # the one implementation per array library
from ptyfast.physics.xp import get_array_module

__all__ = ["back_propagate", "exit_waves", "far_field", "forward_intensity"]


def forward_intensity(probe, obj, positions):
    """Noise-free intensities (N, H, W) in photons for an object and (N, 2) (y, x) positions."""
    xp = get_array_module(obj)
    psi = far_field(exit_waves(probe, obj, positions))
    return (xp.abs(psi) ** 2).astype(xp.float32)
