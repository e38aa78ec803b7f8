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
from ptyfast.physics.probe import lit_mask
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
        self.probes_t = [torch.from_numpy(p).to(self.device) for p in self.probes]
        self.masks_t = [torch.from_numpy(lit_mask(p).astype(np.float32)).to(self.device) for p in self.probes]
        self.generator = torch.Generator(self.device)

    def patches(self, d: Draw) -> torch.Tensor:
        """(B, H, W) complex64 windows of the pool at the draw's sub-pixel corners (bilinear, the
        :func:`ptyfast.kernels.gather` convention: corner = floor, weights from the fractional part)."""
        h, w = self.probes[d.probe].shape
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
        probe = self.probes_t[d.probe]
        patches = self.patches(d)
        psi = far_field(probe[None] * patches)
        intensity = psi.real**2 + psi.imag**2
        photons = torch.from_numpy(d.photons).to(self.device)
        intensity = intensity * (photons / d.power).float()[:, None, None]
        if d.noisy.any():
            self.generator.manual_seed(int(self.rng.integers(2**62)))
            noisy = torch.from_numpy(d.noisy).to(self.device)
            intensity[noisy] = torch.poisson(intensity[noisy], generator=self.generator)
        x = preprocess_tensor(intensity, {"transform": self.options.transform, "normalise": self.options.normalise},
                              photons)
        mask = self.masks_t[d.probe].expand(len(d.objects), -1, -1)
        return x, patches.abs(), patches.angle(), mask


def make_sampler(pool, probe, options: DataOptions, rng, device: torch.device, simulate: str = "auto"):
    """The training sampler: ``numpy`` (CPU), ``torch`` (on ``device``), or ``auto`` = torch on a GPU, numpy
    on a CPU (measured faster there: ``benchmarks/simulator_speed.py``)."""
    use_torch = simulate == "torch" or (simulate == "auto" and device.type != "cpu")
    if use_torch:
        return TorchPatternSampler(pool, probe, options, rng, device)
    return PatternSampler(pool, probe, options, rng)


__all__ = ["TorchPatternSampler", "make_sampler"]
