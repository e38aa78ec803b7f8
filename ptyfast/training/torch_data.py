"""The training simulator in torch: :class:`~ptyfast.training.data.PatternSampler`'s batches rendered on a
torch device (the GPU when there is one), so that a GPU trains without waiting for the CPU to simulate.

The random choices are the numpy sampler's own (:meth:`PatternSampler.draw`, the same generator and order);
only the rendering moves: bilinear window gather from the pool held on the device, the project's forward
model (:func:`ptyfast.finetune.torch_forward.far_field`: ``Ψ = fftshift(fft2(P·O, norm="ortho"))``),
photon scaling, Poisson counts (``torch.poisson``, seeded per batch from the numpy generator, so a resumed
run continues the same stream) and :func:`ptyfast.models.preprocess.preprocess_tensor`. Noise-free batches
equal the numpy sampler's to float32 rounding (tested).
"""

from __future__ import annotations

import numpy as np
import torch

from ptyfast.finetune.torch_forward import far_field
from ptyfast.models.preprocess import preprocess_tensor
from ptyfast.training.data import DataOptions, Draw, PatternSampler


class TorchPatternSampler(PatternSampler):
    """:class:`PatternSampler` whose batches are torch tensors rendered on ``device``.

    The pool (equal-sized objects) is stacked once on the device: pool_size × object_size² × 8 bytes
    (320 objects of 320²: 262 MB).
    """

    def __init__(self, pool: list[np.ndarray], probe: np.ndarray, options: DataOptions, rng,
                 device: torch.device | str = "cpu") -> None:
        super().__init__(pool, probe, options, rng)
        self.device = torch.device(device)
        self.pool_t = torch.from_numpy(np.stack([o.astype(np.complex64) for o in pool])).to(self.device)
        self.modes_t = torch.from_numpy(self.modes).to(self.device)
        self.lit_t = torch.from_numpy(self.lit.astype(np.float32)).to(self.device)
        self.generator = torch.Generator(self.device)

    def patches(self, d: Draw) -> torch.Tensor:
        """(B, H, W) complex64 windows of the pool at the draw's sub-pixel corners (bilinear, the
        :func:`ptyfast.kernels.gather` convention: corner = floor, weights from the fractional part)."""
        h, w = self.probes[0].shape
        pos = torch.from_numpy(d.positions).to(self.device)
        base = torch.floor(pos)
        fy, fx = (pos - base).float().T[:, :, None, None]
        base = base.long()
        rows = base[:, 0, None] + torch.arange(h + 1, device=self.device)
        cols = base[:, 1, None] + torch.arange(w + 1, device=self.device)
        objects = torch.from_numpy(d.objects).to(self.device)
        win = self.pool_t[objects[:, None, None], rows[:, :, None], cols[:, None, :]]
        top = (1 - fx) * win[:, :h, :w] + fx * win[:, :h, 1:]
        bottom = (1 - fx) * win[:, 1:, :w] + fx * win[:, 1:, 1:]
        return (1 - fy) * top + fy * bottom

    def render(self, d: Draw):
        modes = self.modes_t[torch.from_numpy(np.asarray(d.probe)).to(self.device)]
        patches = self.patches(d)
        psi = far_field(modes[:, 0] * patches)
        intensity = psi.real**2 + psi.imag**2
        second = np.flatnonzero(np.any(self.modes[d.probe, 1] != 0, axis=(1, 2)))
        if len(second):
            sel = torch.from_numpy(second).to(self.device)
            psi2 = far_field(modes[sel, 1] * patches[sel])
            intensity[sel] += psi2.real**2 + psi2.imag**2
        photons = torch.from_numpy(d.photons).to(self.device)
        intensity = intensity * (photons / torch.from_numpy(np.asarray(d.power, np.float64)).to(self.device)
                                 ).float()[:, None, None]
        if d.noisy.any():
            self.generator.manual_seed(int(self.rng.integers(2**62)))
            noisy = torch.from_numpy(d.noisy).to(self.device)
            intensity[noisy] = torch.poisson(intensity[noisy], generator=self.generator)
        x = preprocess_tensor(intensity, {"transform": self.options.transform, "normalise": self.options.normalise},
                              photons)
        if self.options.conditioning:
            x = torch.cat([x, condition_tensor(intensity, modes[:, 0], photons, self.options.conditioning)], dim=1)
        mask = self.lit_t[torch.from_numpy(np.asarray(d.probe)).to(self.device)]
        return x, patches.abs(), patches.angle(), mask


def condition_tensor(intensity, probes, photons, kind: str):
    """The conditioning channels of :func:`ptyfast.models.preprocess.preprocess` for torch tensors on their
    device: (N, 2 or 4, H, W) from intensities (N, H, W) and probes (N, H, W) complex."""
    from ptyfast.finetune.torch_forward import back_propagate

    flat = probes.reshape(len(probes), -1)
    peak = flat.gather(1, flat.abs().argmax(dim=1, keepdim=True))[:, :, None]
    unit = probes * (peak.conj() / peak.abs().clamp_min(1e-12) ** 2)
    parts = [unit.real, unit.imag]
    if kind == "probe+estimate":
        power = (probes.abs() ** 2).sum((-2, -1), keepdim=True)
        scaled = probes * torch.sqrt(photons.reshape(-1, 1, 1) / power).to(probes.real.dtype)
        field = far_field(scaled)
        magnitude = field.abs()
        phase = field / (magnitude + 1e-3 * magnitude.amax((-2, -1), keepdim=True))
        psi = back_propagate(intensity.clamp_min(0).sqrt() * phase)
        inten = scaled.abs() ** 2
        peak_i = inten.amax((-2, -1), keepdim=True)
        est = psi * scaled.conj() / (inten + 0.01 * peak_i)
        parts += [est.real, est.imag]
    return torch.stack(parts, dim=1).float()


def make_sampler(pool, probe, options: DataOptions, rng, device: torch.device, simulate: str = "auto"):
    """The training sampler: ``numpy`` (CPU), ``torch`` (on ``device``), or ``auto`` = torch on a GPU, numpy
    on a CPU (measured faster there: ``benchmarks/simulator_speed.py``)."""
    use_torch = simulate == "torch" or (simulate == "auto" and device.type != "cpu")
    if use_torch:
        return TorchPatternSampler(pool, probe, options, rng, device)
    return PatternSampler(pool, probe, options, rng)


__all__ = ["TorchPatternSampler", "make_sampler"]
