"""The probe of a scan whose file holds only a guess: a short rPIE (object and probe) on a compact block of its
frames, as `ptyfast refine SCAN --frames ... -n 30` would give it, for `reconstruct --estimate-probe`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Frames and iterations of the estimate: a block of ≈ 256 overlapping frames (the Siemens star's upper half is
#: 258) and 30 rPIE iterations, the documented two-command workflow's probe run.
ESTIMATE_FRAMES = 256
ESTIMATE_ITERATIONS = 30


@dataclass
class ProbeEstimate:
    """The estimated probe (H, W) complex64 (the strongest mode when several were refined) and how it was made."""

    probe: np.ndarray
    frames: np.ndarray
    iterations: int
    errors: tuple[float, float]
    kept: str  # "updated", or "held" when the probe trial found the file's probe explains the data better

    def describe(self) -> str:
        what = ("refined" if self.kept == "updated"
                else "kept as the file's: updating it did not lower the data error")
        return (f"probe estimated by {self.iterations} rPIE iterations on the {len(self.frames)} frames nearest the "
                f"scan's centre (data error {self.errors[0]:.4g} → {self.errors[1]:.4g}); {what}")


def central_frames(positions: np.ndarray, count: int) -> np.ndarray:
    """Indices (increasing) of the ``count`` positions nearest the median position: a compact, fully
    overlapping block of the scan, whatever its path."""
    pos = np.asarray(positions, dtype=np.float64)
    centre = np.median(pos, axis=0)
    nearest = np.argsort(np.hypot(*(pos - centre).T), kind="stable")[: max(1, min(int(count), len(pos)))]
    return np.sort(nearest)


def estimate_probe(scan, *, frames: int = ESTIMATE_FRAMES, iterations: int = ESTIMATE_ITERATIONS, probe=None,
                   seed: int | None = 0) -> ProbeEstimate:
    """Refine object and probe from a flat start on :func:`central_frames` of ``scan`` (default settings of
    :func:`ptyfast.refine.refine`, probe trial included) and return the probe.

    Raises
    ------
    InputError
        As :func:`ptyfast.refine.refine` (no probe to start from, bad data).
    """
    from ptyfast.refine.run import refine
    from ptyfast.refine.start import _to_numpy

    idx = central_frames(scan.positions, frames)
    sub = scan.select(idx)
    result = refine(sub, init="flat", iterations=int(iterations), probe=probe, seed=seed)
    p = _to_numpy(result.probe).astype(np.complex64, copy=False)
    if p.ndim == 3:
        p = p[np.argmax(np.sum(np.abs(p) ** 2, axis=(1, 2)))]
    kept = result.meta.get("probe_trial", {}).get("kept", "updated")
    return ProbeEstimate(probe=p, frames=idx, iterations=result.iterations,
                         errors=(float(result.errors[0]), float(result.errors[-1])), kept=kept)
