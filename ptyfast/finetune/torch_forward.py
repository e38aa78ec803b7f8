"""The project's far-field forward model in torch (differentiable), the same convention as
:mod:`ptyfast.physics.forward`:

    Psi = fftshift(fft2(P * O_patch, norm="ortho")),   I = |Psi|^2

The FFT always runs in complex64 (fp32), also when the network runs under bf16 autocast: callers pass
float/complex tensors and every function here casts its inputs up before transforming.
"""

from __future__ import annotations

import torch

__all__ = [
    "far_field", "back_propagate", "object_patches", "exit_waves", "predicted_amplitude", "r_factor",
]


def _complex(x: torch.Tensor) -> torch.Tensor:
    """``x`` as complex64 (real inputs get a zero imaginary part; bf16/fp16 are cast up first)."""
    if x.is_complex():
        return x.to(torch.complex64)
    return torch.complex(x.float(), torch.zeros_like(x, dtype=torch.float32))


def far_field(exit_wave: torch.Tensor) -> torch.Tensor:
    """Propagate exit waves to the detector: ``fftshift(fft2(ψ, norm="ortho"))`` over the last two axes.

    Parameters
    ----------
    exit_wave : (..., H, W) complex or real tensor

    Returns
    -------
    (..., H, W) complex64 tensor, zero frequency at index (H//2, W//2).
    """
    with torch.autocast(exit_wave.device.type, enabled=False):
        psi = torch.fft.fft2(_complex(exit_wave), dim=(-2, -1), norm="ortho")
        return torch.fft.fftshift(psi, dim=(-2, -1))


def back_propagate(wave: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`far_field`: ``ifft2(ifftshift(Ψ), norm="ortho")``."""
    with torch.autocast(wave.device.type, enabled=False):
        return torch.fft.ifft2(torch.fft.ifftshift(_complex(wave), dim=(-2, -1)), dim=(-2, -1), norm="ortho")


def object_patches(amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Complex object patches ``A · exp(iφ)`` (complex64) from the network's two heads.

    Parameters
    ----------
    amplitude, phase : (N, H, W) real tensors (phase in radians); any float dtype.
    """
    return torch.polar(amplitude.float(), phase.float())


def exit_waves(probe: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """ψ_n = P · O_n.

    Parameters
    ----------
    probe : (H, W) complex tensor
    patches : (N, H, W) complex tensor
    """
    return _complex(probe)[None] * _complex(patches)


def predicted_amplitude(probe: torch.Tensor, amplitude: torch.Tensor, phase: torch.Tensor,
                        *, eps: float = 0.0) -> torch.Tensor:
    """Far-field amplitudes ``|Ψ| = √I`` (photons^½) of the patches ``A·exp(iφ)`` lit by ``probe``.

    Parameters
    ----------
    probe : (H, W) complex tensor, in √photons (``Σ|P|²`` = photons per frame for ``|O| = 1``)
    amplitude, phase : (N, H, W) real tensors
    eps : float
        Added under the square root (``√(|Ψ|² + eps)``) to keep the gradient finite at ``|Ψ| = 0``.

    Returns
    -------
    (N, H, W) float32 tensor.
    """
    psi = far_field(exit_waves(probe, object_patches(amplitude, phase)))
    if eps > 0:
        return torch.sqrt(psi.real**2 + psi.imag**2 + eps)
    return psi.abs()


def r_factor(pred_amplitude: torch.Tensor, measured_amplitude: torch.Tensor,
             mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerator and denominator of the data-consistency R-factor ``Σ|√I_pred − √I| / Σ√I``.

    Returned separately so that callers can accumulate them over batches; masked pixels (``mask`` False)
    are left out of both sums.
    """
    diff = (pred_amplitude - measured_amplitude).abs()
    meas = measured_amplitude
    if mask is not None:
        diff = diff * mask
        meas = meas * mask
    return diff.sum(), meas.sum()
