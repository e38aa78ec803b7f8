"""What fine-tuning minimises (see :mod:`ptyfast.finetune.loop` for the method and its ambiguities).

* :class:`DataTerm`: the predicted far-field amplitudes against the measured ones (``l1`` or ``poisson``),
  normalised by the data so the loss is dimensionless, over valid detector pixels only;
* the regularisers of the objectives: the phase anchor (each patch's ``|P|²``-weighted mean phase held at
  the pre-trained network's) and the guide (each patch near the window of an rPIE-refined object);
* :class:`OverlapObject`: the stitched object behind ``--objective overlap`` — every patch's latest
  prediction blended with ``|P|²`` weights, in which a batch's live patches replace their cached copies.
"""

from __future__ import annotations

import numpy as np
import torch

from ptyfast.finetune import torch_forward
from ptyfast.finetune.torch_stitch import Footprints
from ptyfast.kernels.numpy_twins import STITCH_FLOOR

__all__ = ["DataTerm", "OverlapObject", "mean_phase", "guide_term"]


class DataTerm:
    """The data loss of predicted amplitudes ``pred`` against measured ``meas`` (both (B, H, W), √photons).

    ``l1``: ``mean_valid |pred − meas| / mean_valid meas``; ``poisson``: ``mean_valid (λ − I·log λ) /
    mean_valid I`` with ``λ = pred²``, ``I = meas²``. ``mask`` (H, W) True = valid pixel, or None.
    The normalisers are the means of the fine-tuned frames' measured amplitudes and intensities.
    """

    def __init__(self, kind: str, meas: np.ndarray, mask: np.ndarray | None, device) -> None:
        self.kind = kind
        weight = mask.astype(np.float32) if mask is not None else np.float32(1.0)
        self.valid = float(mask.sum()) if mask is not None else float(meas.shape[-2] * meas.shape[-1])
        n = len(meas)
        self.norm_amp = float((meas * weight).sum()) / (n * self.valid) + 1e-12
        self.norm_int = float(((meas**2) * weight).sum()) / (n * self.valid) + 1e-12
        self.mask = torch.from_numpy(mask.astype(np.float32)).to(device) if mask is not None else None

    def __call__(self, pred: torch.Tensor, meas: torch.Tensor) -> torch.Tensor:
        if self.kind == "l1":
            d = (pred - meas).abs()
            norm = self.norm_amp
        else:
            lam = pred * pred + 1e-6 * self.norm_int
            d = lam - (meas * meas) * torch.log(lam)
            norm = self.norm_int
        if self.mask is not None:
            d = d * self.mask
        return d.sum() / (len(pred) * self.valid) / norm

    def r_factor(self, pred: torch.Tensor, meas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ|pred − meas|, Σ meas) over valid pixels: sums of batches give the R-factor of a pass."""
        return torch_forward.r_factor(pred, meas, self.mask)


def mean_phase(phase: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Each patch's ``weight``-averaged phase (``weight`` = |P|² / Σ|P|²): the offset no pattern sees."""
    return (phase * weight).sum(dim=(-2, -1))


def guide_term(amplitude: torch.Tensor, phase: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative squared distance of the predicted patches to ``target`` (the refined object's windows)."""
    return (torch.polar(amplitude, phase) - target).abs().square().mean() / target.abs().square().mean()


class OverlapObject:
    """The ``|P|²``-weighted stitch of every frame's latest predicted patch (flat complex numerator ``num``
    over the fixed weight sum), on the object grid of ``positions``.

    Predictions are cached per frame; :meth:`live` gives the numerator with a batch's patches replaced by
    live (differentiable) ones, :meth:`commit` stores them, so a step costs O(batch), not O(frames).
    """

    def __init__(self, positions: np.ndarray, window: tuple[int, int], shape: tuple[int, int],
                 weight: np.ndarray, device, batch: int) -> None:
        n = len(positions)
        self.footprints = Footprints(positions, window, shape, device=device)
        self.cache = torch.empty((n, *window), dtype=torch.complex64, device=device)
        self.weight = torch.from_numpy(np.asarray(weight, np.float32)).to(device)
        self.every = torch.arange(n, device=device)
        self.batch = batch
        self.size = shape[0] * shape[1]
        wsum = torch.zeros(self.size, device=device)
        for s in range(0, n, batch):
            ib = self.every[s : s + batch]
            wsum = self.footprints.add(wsum, self.weight.expand(len(ib), *window), ib)
        self.den = torch.clamp(wsum, min=max(STITCH_FLOOR * float(wsum.max()), 1e-30))
        self.num = torch.zeros(self.size, dtype=torch.complex64, device=device)

    def restitch(self) -> None:
        """Rebuild the numerator Σ w·patch from every cached patch."""
        acc = torch.zeros(self.size, dtype=torch.complex64, device=self.den.device)
        for s in range(0, len(self.cache), self.batch):
            acc = self.footprints.add(acc, self.weight * self.cache[s : s + self.batch], self.every[s : s + self.batch])
        self.num = acc

    def live(self, patches: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
        """The numerator with frames ``ib``'s cached patches replaced by ``patches`` (keeps their gradient)."""
        return self.footprints.add(self.num, self.weight * (patches - self.cache[ib]), ib)

    def commit(self, patches: torch.Tensor, ib: torch.Tensor) -> None:
        """Store frames ``ib``'s new patches (no gradient) in the cache and the numerator."""
        fresh = patches.detach()
        self.num = self.footprints.add(self.num, self.weight * (fresh - self.cache[ib]), ib)
        self.cache[ib] = fresh

    def seen_through(self, probe: torch.Tensor, ib: torch.Tensor, num: torch.Tensor | None = None) -> torch.Tensor:
        """Far-field amplitudes of the stitched object's windows ``ib`` lit by ``probe``."""
        num = self.num if num is None else num
        psi = torch_forward.far_field(probe[None] * self.footprints.gather(num / self.den, ib))
        return torch.sqrt(psi.real**2 + psi.imag**2 + 1e-12)
