"""The fine-tuning guard: held-out frames, and their data error against the object ``reconstruct`` would write.

A falling training loss does not mean a better reconstruction: one pattern does not determine its patch, so
the network can fit every training pattern while the stitched object gets worse (amplitude leaking into the
phase, patches that no longer agree). The guard therefore judges the weights by what ``reconstruct`` makes
of them: every selected frame is predicted, its phase offset solved from the overlaps and blended
(:func:`ptyfast.runtime.reconstruct.reconstruct_scan`, the very code ``reconstruct`` runs), and the stitched
object is propagated through the forward model at the *held-out* frames — patterns the optimiser never
sees — and compared with their measured amplitudes (ε of :class:`~ptyfast.runtime.consistency.Consistency`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ptyfast.errors import InputError
from ptyfast.runtime.backends import Backend

__all__ = ["MIN_GAIN", "MIN_HELD_OUT", "held_out_frames", "Validation", "Validator"]

#: The fewest frames held out whenever the guard is on (the data error of one or two frames is too noisy).
MIN_HELD_OUT = 3

#: A check counts as an improvement only when it lowers the held-out ε by at least this fraction of the lowest
#: so far. Smaller gains do not mean a better object (the network can learn to fit the patterns with a less
#: faithful object), so only a clearly better fit replaces the starting weights; the evidence for the value is
#: in ``docs/benchmarks.md``, "Fine-tuning guard".
MIN_GAIN = 0.05


def held_out_frames(selected: np.ndarray, fraction: float) -> np.ndarray:
    """The frames of ``selected`` (sorted scan indices) kept out of training: ``max(MIN_HELD_OUT,
    round(fraction·M))`` of the M, evenly spaced in acquisition order (the middle of M/k-frame blocks, so
    they spread over the whole scan); none when ``fraction`` is 0. Refused (:class:`InputError`) when fewer
    than two frames would be left to train on."""
    selected = np.asarray(selected, np.int64)
    m = len(selected)
    if fraction <= 0:
        return selected[:0]
    k = max(MIN_HELD_OUT, int(round(fraction * m)))
    if m - k < 2:
        raise InputError(f"only {m} frames are selected: too few to hold {k} out for validation and train on "
                         "the rest; select more frames or pass --val-fraction 0 (no guard).")
    return selected[((np.arange(k) + 0.5) * (m / k)).astype(np.int64)]


class ModuleBackend(Backend):
    """A torch module being fine-tuned, as a :class:`~ptyfast.runtime.backends.Backend` (what
    :func:`~ptyfast.runtime.reconstruct.reconstruct_scan` runs): no gradients, the module left as it is.
    ``net`` is the fine-tuning loop's callable (batch in, fp32 amplitude and phase out)."""

    name = "torch"

    def __init__(self, net, manifest, device) -> None:
        self.net, self.manifest, self.device = net, manifest, str(getattr(device, "type", device))
        self.precision = "bf16" if net.autocast.get("enabled") else "fp32"

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.no_grad():
            a, ph = self.net(torch.from_numpy(x).to(self.net.device))
        return a.cpu().numpy(), ph.cpu().numpy()


@dataclass
class Validation:
    """One check of the weights: the reconstruction of every selected frame (``reconstruct``'s stitching,
    offsets solved) and the data error ε of the held-out frames (NaN without any)."""

    reconstruction: object
    held_out_error: float


class Validator:
    """Reconstructs the selected frames with the current weights and scores the held-out ones.

    Parameters
    ----------
    scan : the scan restricted to the selected frames (frames stay on disk when lazy: they are streamed as
        ``reconstruct`` streams them).
    fit : how frames are brought to the model's size (``--fit``).
    manifest : the model's manifest (preprocessing, phase offsets, conditioning).
    held : (k,) indices into ``scan``'s frames of the held-out frames.
    held_frames : (k, H, W) their intensities, fitted to the model's size.
    mask : the fitted detector mask (True = valid) or None.
    batch : inference batch.
    """

    def __init__(self, scan, fit: str, manifest, held: np.ndarray, held_frames: np.ndarray, mask,
                 batch: int = 32) -> None:
        from ptyfast.runtime.consistency import measured_amplitudes

        self.scan, self.fit, self.manifest, self.batch = scan, fit, manifest, batch
        self.held = np.asarray(held, np.int64)
        self.train = np.setdiff1d(np.arange(scan.n_frames), self.held)
        self.fft_mask = None if mask is None else np.fft.ifftshift(mask)
        self.measured = measured_amplitudes(np.asarray(held_frames, np.float32), self.fft_mask)

    def __call__(self, net, probe: np.ndarray, subset: np.ndarray | None = None) -> Validation:
        """Reconstruct with ``net`` (the loop's network callable) and ``probe`` (complex (H, W), as the forward
        model uses it now); ε is computed with its own least-squares amplitude scale. With ``subset`` (indices
        into the frames) only those frames are reconstructed and no error is computed."""
        from ptyfast.runtime.consistency import consistency_from_sums, frame_sums
        from ptyfast.runtime.reconstruct import reconstruct_scan

        probe = np.asarray(probe, np.complex64)
        if not np.all(np.isfinite(probe)):  # diverged (the learned scale or probe): nothing to reconstruct
            return Validation(None, float("inf"))
        scan = self.scan if subset is None else self.scan.select(np.asarray(subset, np.int64))
        was = net.model.training
        net.model.eval()
        try:
            rec = reconstruct_scan(scan, ModuleBackend(net, self.manifest, net.device), batch=self.batch,
                                   fit=self.fit, probe=probe, consistency=False)
        finally:
            net.model.train(was)
        if subset is not None:
            return Validation(rec, float("nan"))
        if not np.all(np.isfinite(rec.object)):
            return Validation(rec, float("inf"))
        if len(self.held) == 0:
            return Validation(rec, float("nan"))
        sums = frame_sums(rec.object, rec.probe, rec.positions[self.held], self.measured, fft_mask=self.fft_mask)
        e = consistency_from_sums(sums).error
        return Validation(rec, e if np.isfinite(e) else float("inf"))
