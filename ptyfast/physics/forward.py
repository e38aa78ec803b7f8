"""The far-field forward model, written once for numpy and CuPy.

Convention (the whole project):

    Psi = fftshift(fft2(P * O[y:y+H, x:x+W], norm="ortho")),   I = |Psi|^2

so that sum(I) = sum(|P * O_patch|^2) (Parseval): a probe normalised to ``sum(|P|^2) = n`` photons
gives at most ``n`` photons per frame. Axis order is (..., row=y, col=x); the zero frequency sits at
index (H//2, W//2) after the fftshift.
"""

from __future__ import annotations

from ptyfast.physics.xp import fft_module, fft_workers, get_array_module


def far_field(exit_wave):
    """Propagate exit waves (..., H, W) to the detector: fftshift(fft2(ψ, norm="ortho"))."""
    xp = get_array_module(exit_wave)
    f = fft_module(xp)
    return xp.fft.fftshift(f.fft2(exit_wave, axes=(-2, -1), norm="ortho", **fft_workers(xp)), axes=(-2, -1))


def back_propagate(wave):
    """Inverse of :func:`far_field`: ifft2(ifftshift(Ψ), norm="ortho")."""
    xp = get_array_module(wave)
    f = fft_module(xp)
    return f.ifft2(xp.fft.ifftshift(wave, axes=(-2, -1)), axes=(-2, -1), norm="ortho", **fft_workers(xp))


def exit_waves(probe, obj, positions):
    """ψ_n = P · O_n, with O_n the object patch at sub-pixel ``positions`` (bilinear; see kernels.gather)."""
    from ptyfast.kernels import gather

    patches = gather(obj, positions, probe.shape)
    return probe[None] * patches


def forward_intensity(probe, obj, positions):
    """Noise-free intensities (N, H, W) in photons for an object and (N, 2) (y, x) positions."""
    xp = get_array_module(obj)
    psi = far_field(exit_waves(probe, obj, positions))
    return (xp.abs(psi) ** 2).astype(xp.float32)
