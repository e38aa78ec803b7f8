"""Training pairs from the instrument itself: (measured pattern, window of a reference reconstruction).

The reference (a ``ptyfast refine`` or ``reconstruct`` output: ``object``, ``origin``, ``probe``, ``weight``)
is an iterative solution of the same scan. Frame n's label is the reference object's window at the frame's
position in the reference grid, ``positions[n] − origin``, sampled bilinearly with
:func:`ptyfast.kernels.gather` — the same window convention as stitching — so the label is exactly what the
network must predict for that pattern.

Augmentation is limited to what the physics allows. Flips and rotations of a pattern correspond to a flipped
*probe* as well, so they would teach the network another instrument: not used. What is used (``--mix
-simulated``): extra patterns simulated with the forward model from the reference object itself at random
sub-pixel positions inside its well-covered region, with the reference's own refined probe (the one its
object is consistent with; the probe stored in a scan can be far from it: similarity 0.60 on the Siemens
star) at the scan's photon count — new positions of the same sample under the same probe, as the iterative
solver itself models them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptyfast.errors import InputError
from ptyfast.kernels import gather
from ptyfast.models.preprocess import preprocess
from ptyfast.physics.probe import scaled_to
from ptyfast.scan import Scan

COVERAGE = 0.05  # global phase and simulation use the reference's pixels with weight ≥ 5 % of its maximum
WINDOW_COVERAGE = 0.5  # a window is labelled if, on its lit pixels, the reference weight is ≥ half one frame's |P|²


@dataclass
class LabelledSet:
    """Network inputs (N, 1, H, W) with their amplitude and phase labels (N, H, W)."""

    x: np.ndarray
    amplitude: np.ndarray
    phase: np.ndarray

    def take(self, idx) -> "LabelledSet":
        return LabelledSet(self.x[idx], self.amplitude[idx], self.phase[idx])

    @staticmethod
    def join(parts: list["LabelledSet"]) -> "LabelledSet":
        return LabelledSet(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("x", "amplitude", "phase")))


def read_reference(path: str | Path) -> dict:
    """object, origin, probe and weight of a reconstruct/refine output, with one clear error if absent."""
    from ptyfast.runtime.output import read_reconstruction

    ref = read_reconstruction(path)
    missing = [k for k in ("object", "origin", "weight") if k not in ref]
    if missing or ref.get("probe") is None:
        raise InputError(f"--labels {path} lacks {', '.join(missing + (['probe'] if ref.get('probe') is None else []))}; "
                         "give an output of `ptyfast refine` or `ptyfast reconstruct`.")
    return ref


def scan_probe(scan: Scan, ref: dict, path) -> np.ndarray:
    """The probe the model will see at inference: the scan's own (what `reconstruct` uses), else the
    reference's refined probe. It must have the pattern size."""
    probe = scan.probe if scan.probe is not None else np.asarray(ref["probe"])
    if tuple(np.shape(ref["probe"])) != scan.frame_shape:
        raise InputError(f"--labels {path} was reconstructed with a {ref['probe'].shape[0]}×{ref['probe'].shape[1]} "
                         f"probe but the scan's patterns are {scan.frame_shape[0]}×{scan.frame_shape[1]}; use a "
                         "reference of this scan.")
    return np.asarray(probe, np.complex64)


def label_windows(scan: Scan, ref: dict, path) -> np.ndarray:
    """Each frame's window corner on the reference grid; refuses windows the reference does not cover."""
    h, w = scan.frame_shape
    grid = scan.positions - np.asarray(ref["origin"], np.float64)
    rows, cols = ref["object"].shape
    inside = (grid[:, 0] >= 0) & (grid[:, 1] >= 0) & (grid[:, 0] <= rows - h - 1) & (grid[:, 1] <= cols - w - 1)
    covered = np.zeros(len(grid), bool)
    weight = np.asarray(ref["weight"], np.float32)
    p2 = np.abs(np.asarray(ref["probe"])) ** 2
    lit = p2 >= 0.1 * p2.max()
    if inside.any():  # illuminated in the reference at least about as much as by this frame alone
        wins = gather(weight, grid[inside], (h, w))
        covered[inside] = np.min(wins[:, lit] / p2[lit], axis=1) >= WINDOW_COVERAGE
    bad = np.flatnonzero(~covered)
    if len(bad):
        frames = scan.meta.get("frame_indices")
        k = int(frames[bad[0]]) if frames is not None else int(bad[0])
        raise InputError(f"--labels {path} does not cover the windows of {len(bad)} of the {len(grid)} selected "
                         f"frames (first: frame {k}); reconstruct the reference from the same frames (--frames).")
    return grid


def labelled_set(scan: Scan, ref: dict, path, preprocessing: dict) -> LabelledSet:
    """(input, amplitude, phase) for every frame of ``scan`` (already restricted with ``--frames``)."""
    probe = scan_probe(scan, ref, path)
    grid = label_windows(scan, ref, path)
    patches = gather(np.asarray(ref["object"], np.complex64), grid, scan.frame_shape)
    frames = scan.frames(0, scan.n_frames)
    x = preprocess(frames, preprocessing=preprocessing, probe_power=float(np.sum(np.abs(probe) ** 2)),
                   mask=scan.mask)
    return LabelledSet(x, np.abs(patches).astype(np.float32), np.angle(patches).astype(np.float32))


def covered_object(ref: dict, margin: int = 0) -> np.ndarray:
    """The reference object cropped to the bounding box of its well-covered pixels (for simulation)."""
    weight = np.asarray(ref["weight"])
    ys, xs = np.nonzero(weight >= 0.5 * weight.max())
    return np.asarray(ref["object"], np.complex64)[ys.min() + margin: ys.max() + 1 - margin,
                                                   xs.min() + margin: xs.max() + 1 - margin]


class LabelledSampler:
    """Batches from a :class:`LabelledSet`, optionally mixed with a simulated sampler (a fraction ``mix`` of
    each batch), in the (x, amplitude, phase, lit mask) form of :class:`~ptyfast.training.data.PatternSampler`."""

    def __init__(self, data: LabelledSet, mask: np.ndarray, rng, *, simulated=None, mix: float = 0.0):
        self.data, self.mask = data, mask.astype(np.float32)
        self.rng = np.random.default_rng(rng)
        self.simulated, self.mix = simulated, mix if simulated is not None else 0.0

    def sample(self, batch: int):
        n_sim = int(round(batch * self.mix))
        idx = self.rng.integers(len(self.data.x), size=batch - n_sim)
        parts = [(self.data.x[idx], self.data.amplitude[idx], self.data.phase[idx],
                  np.broadcast_to(self.mask, (len(idx),) + self.mask.shape))]
        if n_sim:
            self.simulated.rng = self.rng
            parts.append(self.simulated.sample(n_sim))
        return tuple(np.ascontiguousarray(np.concatenate([p[k] for p in parts])) for k in range(4))


def split_validation(n: int, val_frames: np.ndarray | None, train_frames: np.ndarray, fraction: float = 0.1
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) positions into the selected frames: the explicit ``--val-frames`` (which must not
    overlap the training frames) or the last ``fraction`` of the selection — a contiguous block, i.e. a
    separate region of a row-ordered scan, so validation measures generalisation to unseen object areas."""
    if val_frames is not None:
        both = np.intersect1d(val_frames, train_frames)
        if len(both):
            raise InputError(f"--val-frames and --frames share {len(both)} frames (first: {int(both[0])}); "
                             "validation frames must be held out from training.")
        return np.arange(n), np.array([], dtype=np.int64)
    n_val = max(1, int(round(n * fraction)))
    if n - n_val < 1:
        raise InputError(f"--frames selects {n} frame(s): too few to hold out a validation part.")
    return np.arange(n - n_val), np.arange(n - n_val, n)


__all__ = ["LabelledSet", "LabelledSampler", "labelled_set", "read_reference", "covered_object", "split_validation"]


def build_labelled(scans: list[Path], references: list[Path], *, frames: str | None, val_frames: str | None,
                   preprocessing: dict, val_fraction: float = 0.1) -> dict:
    """Everything `train --labels` needs from SCAN/REF pairs: training and validation sets, the probe, and
    the references' covered objects (pool for ``--mix-simulated``)."""
    from ptyfast.io.convert import load_any
    from ptyfast.scan import parse_frames

    if len(scans) != len(references):
        raise InputError(f"give one --labels reference per scan: {len(scans)} scan(s), {len(references)} "
                         "reference(s), paired in order.")
    train_parts, val_parts, pool, probe, sim_probe = [], [], [], None, None
    for scan_path, ref_path in zip(scans, references):
        whole = load_any(scan_path)
        if whole.near_field:
            raise InputError(f"{scan_path} holds near-field data; the networks learn far-field patterns only.")
        sel = parse_frames(frames, whole.n_frames)
        vsel = parse_frames(val_frames, whole.n_frames, option="--val-frames") if val_frames else None
        ref = read_reference(ref_path)
        p = scan_probe(whole, ref, ref_path)
        if probe is None:
            probe, sim_probe = p, np.asarray(ref["probe"], np.complex64)
        elif p.shape != probe.shape:
            raise InputError(f"{scan_path} has {p.shape[0]}×{p.shape[1]} patterns but the first scan "
                             f"{probe.shape[0]}×{probe.shape[1]}; one model learns one pattern size.")
        ref = {**ref, "object": remove_global_phase(ref)}
        tr, va = split_validation(len(sel), vsel, sel, val_fraction)
        data = labelled_set(whole.select(sel), ref, ref_path, preprocessing)
        train_parts.append(data.take(tr))
        if vsel is not None:
            val_parts.append(labelled_set(whole.select(vsel), ref, ref_path, preprocessing))
        else:
            val_parts.append(data.take(va))
        pool.append(covered_object(ref))
    return {"train": LabelledSet.join(train_parts), "val": LabelledSet.join(val_parts), "probe": probe,
            "pool": pool, "sim_probe": sim_probe, "refined_probe": scaled_to(sim_probe, probe)}


def remove_global_phase(ref: dict) -> np.ndarray:
    """The reference object times exp(−i φ₀), φ₀ its mean phase on the covered region (an iterative solution
    carries an arbitrary global phase; centring it keeps labels away from the ±π wrap)."""
    obj = np.asarray(ref["object"], np.complex64)
    weight = np.asarray(ref["weight"])
    region = weight >= COVERAGE * weight.max()
    return obj * np.exp(-1j * np.angle(np.sum(obj[region]))).astype(np.complex64)
