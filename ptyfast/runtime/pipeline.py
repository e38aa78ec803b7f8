"""The streaming reconstruct pipeline: HDF5 chunks → preprocess → batched inference → stitching,
then a data-consistency pass through the forward model.

Memory: a background thread reads ``chunk`` frames at a time into a bounded queue (at most ``queue_depth``
chunks in flight), so peak memory is O(chunk · H · W) for the data plus O(object area) for the stitched
object and its weight map, independent of the number of frames.

Stitching (see :func:`ptyfast.kernels.stitch`): each predicted patch A·exp(iφ) is placed at its true
sub-pixel position (bilinear) and blended with weights w = |P|² (the probe intensity: pixels the probe
barely lit carry little information), O = Σ w·patch / Σ w. ``weighting="uniform"`` reproduces the seed
paper's stitching (w = 1 at integer-rounded positions) for comparison. ``align_phase`` solves every patch's
phase offset from the overlaps (:mod:`ptyfast.runtime.phase_align`; one pattern cannot determine it) before
blending: the patches are then kept in memory, cropped to where the weight is ≥ 1 % of its maximum
(N · 8 bytes · that box: 63 kB per frame for the default probe, 1.3 GB for 20,000 frames; pass
``align_phase=False`` / ``--no-align-phase`` to stream in constant memory), and blended once all are predicted.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ptyfast.errors import InputError
from ptyfast.kernels import exit_waves, far_field, normalise, overlap_add
from ptyfast.runtime.phase_align import solve_phase_offsets, support_box
from ptyfast.runtime.preprocess import fit_frames, fit_mask, fit_positions, fit_probe, preprocess
from ptyfast.scan import Scan

WEIGHTINGS = ("probe", "uniform")


@dataclass
class Consistency:
    """Data consistency of the stitched object with the measured intensities, no ground truth needed.

    ``error`` is the normalised amplitude error ε = Σ(s·√I_pred − √I)² / Σ I over valid detector pixels,
    overall and per frame (0 = perfect; a flat, structureless object gives roughly 0.3–1). ``scale`` s is
    the least-squares amplitude scale between prediction and measurement (the network's input
    normalisation removes the absolute scale; s ≈ 1 when the stitched amplitude is right in absolute terms).
    """

    error: float
    scale: float
    per_frame: np.ndarray


@dataclass
class Reconstruction:
    """A stitched reconstruction. ``positions`` are on the object grid; grid pixel (0, 0) is scan
    position ``origin`` (y, x)."""

    object: np.ndarray
    weight: np.ndarray
    positions: np.ndarray
    origin: np.ndarray
    probe: np.ndarray | None
    consistency: Consistency | None = None
    timings: dict = field(default_factory=dict)
    n_frames: int = 0
    provenance: dict = field(default_factory=dict)

    @property
    def amplitude(self) -> np.ndarray:
        return np.abs(self.object)

    @property
    def phase(self) -> np.ndarray:
        return np.angle(self.object)

    def covered(self, fraction: float = 0.1) -> np.ndarray:
        """Pixels whose stitching weight is at least ``fraction`` of the maximum (well-illuminated)."""
        return self.weight >= fraction * float(self.weight.max())


def probe_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """|⟨a, b⟩| / (‖a‖‖b‖): 1 for the same probe up to scale and global phase, ~0 for unrelated probes."""
    num = abs(np.vdot(a.ravel(), b.ravel()))
    return float(num / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def _reader(scan: Scan, chunk: int, out: queue.Queue, stop: threading.Event, stats: dict) -> None:
    from ptyfast.io.cxi import validate_frames

    try:
        for s in range(0, scan.n_frames, chunk):
            if stop.is_set():
                return
            t = time.perf_counter()
            frames = scan.frames(s, min(s + chunk, scan.n_frames))
            validate_frames(frames, start=s, mask=scan.mask, source=scan.meta.get("source", "the scan"))
            stats["read"] += time.perf_counter() - t
            out.put((s, frames))
        out.put(None)
    except BaseException as exc:  # forwarded to the consumer, which re-raises
        out.put(exc)


def stream_frames(scan: Scan, chunk: int, *, queue_depth: int = 3, stats: dict | None = None):
    """Yield (start, frames) chunks read and validated by a background thread (bounded queue)."""
    stats = stats if stats is not None else {"read": 0.0}
    stats.setdefault("read", 0.0)
    q: queue.Queue = queue.Queue(maxsize=queue_depth)
    stop = threading.Event()
    th = threading.Thread(target=_reader, args=(scan, chunk, q, stop, stats), daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while th.is_alive():  # drain so the reader can finish
            try:
                q.get_nowait()
            except queue.Empty:
                th.join(0.05)


def object_grid(positions: np.ndarray, window: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """(origin (y, x), object shape) of the smallest grid holding every window (+1 px for bilinear)."""
    origin = np.floor(positions.min(axis=0))
    span = np.ceil(positions.max(axis=0) - origin)
    return origin, (int(span[0]) + window[0] + 1, int(span[1]) + window[1] + 1)


def check_far_field(scan: Scan) -> None:
    """Refuse near-field data (checked before anything about frame sizes: no --fit makes it usable)."""
    if scan.near_field:
        reason = scan.meta.get("near_field_reason", "")
        raise InputError(
            f"{scan.meta.get('source', 'the scan')} holds near-field (holographic) data{f' ({reason})' if reason else ''}; "
            "ptyfast's networks reconstruct far-field ptychography only."
        )


def reconstruct_scan(
    scan: Scan,
    backend,
    *,
    batch: int = 128,
    chunk: int = 512,
    fit: str = "none",
    weighting: str = "probe",
    align_phase: bool | None = None,
    consistency: bool = True,
    probe: np.ndarray | None = None,
    progress=None,
) -> Reconstruction:
    """Reconstruct ``scan`` with an opened backend (see :func:`ptyfast.runtime.backends.open_backend`).

    Parameters
    ----------
    scan : Scan
        Far-field scan; diffraction may be lazy (HDF5), it is streamed in ``chunk``-frame pieces.
    backend : Backend
        Maps (B, 1, H, W) preprocessed patterns to (amplitude, phase).
    batch : int
        Inference batch size.
    fit : {"none", "crop", "bin", "pad"}
        How to bring frames to the model's input size (see :func:`ptyfast.runtime.preprocess.fit_frames`).
    weighting : {"probe", "uniform"}
        Stitching weights: |P|² at sub-pixel positions, or the paper's uniform average at rounded positions.
    align_phase : bool or None
        Solve the per-patch phase offsets from the overlaps before blending; None = when the model's
        manifest says its outputs carry free offsets (``phase_offsets == "free"``).
    consistency : bool
        Run the forward-model consistency pass (needs a probe).
    probe : complex (H, W), optional
        Overrides ``scan.probe`` (e.g. the model's probe when the file has none).
    progress : callable(done_frames, total_frames, stage), optional
    """
    if weighting not in WEIGHTINGS:
        raise InputError(f"unknown stitching weighting '{weighting}'; choose {' or '.join(WEIGHTINGS)}.")
    check_far_field(scan)
    size = tuple(backend.manifest.input_size)
    probe = scan.probe if probe is None else probe
    if probe is not None:
        probe = fit_probe(probe, size, fit)
    positions = fit_positions(scan.positions, scan.frame_shape[0], size, fit)
    origin, shape = object_grid(positions, size)
    grid_pos = positions - origin
    if weighting == "uniform":
        grid_pos = np.round(grid_pos)
        w = np.ones(size, np.float32)
    else:
        w = (np.abs(probe) ** 2).astype(np.float32) if probe is not None else _window(size)
    if align_phase is None:
        align_phase = getattr(backend.manifest, "phase_offsets", "absolute") == "free"
    box = support_box(w) if align_phase else (slice(None), slice(None))
    w_box = np.ascontiguousarray(w[box])
    box_offset = np.array([box[0].start or 0, box[1].start or 0], float)
    kept: list[np.ndarray] = []
    probe_power = float(np.sum(np.abs(probe) ** 2)) if probe is not None else None
    mask = None if scan.mask is None else fit_mask(scan.mask, size, fit)
    num = np.zeros(shape, np.complex64)
    wsum = np.zeros(shape, np.float32)
    timings = {"read": 0.0, "preprocess": 0.0, "infer": 0.0, "stitch": 0.0}
    n = scan.n_frames
    t_start = time.perf_counter()
    done = 0
    for s, frames in stream_frames(scan, chunk, stats=timings):
        t = time.perf_counter()
        x = preprocess(fit_frames(frames, size, fit), backend.manifest, probe_power=probe_power, mask=mask)
        timings["preprocess"] += time.perf_counter() - t
        for b in range(0, len(x), batch):
            t = time.perf_counter()
            amp, pha = backend(x[b : b + batch])
            t2 = time.perf_counter()
            timings["infer"] += t2 - t
            patches = (amp * np.exp(1j * pha)).astype(np.complex64)
            pos = grid_pos[s + b : s + b + len(patches)]
            if align_phase:
                kept.append(np.ascontiguousarray(patches[:, box[0], box[1]]))
            else:
                overlap_add(num, patches, pos, weights=w, weight_accum=wsum)
            timings["stitch"] += time.perf_counter() - t2
        done += len(frames)
        if progress is not None:
            progress(done, n, "stitch")
    t = time.perf_counter()
    if align_phase and kept:
        patches = np.concatenate(kept)
        kept.clear()
        patches *= solve_phase_offsets(patches, grid_pos + box_offset, w_box)[:, None, None]
        timings["align"] = time.perf_counter() - t
        overlap_add(num, patches, grid_pos + box_offset, weights=w_box, weight_accum=wsum)
    obj = normalise(num, wsum)
    timings["stitch"] += time.perf_counter() - t
    timings["wall_stitched"] = time.perf_counter() - t_start
    rec = Reconstruction(object=obj, weight=wsum, positions=grid_pos, origin=origin, probe=probe,
                         n_frames=n, timings=timings)
    if consistency and probe is not None:
        t = time.perf_counter()
        rec.consistency = data_consistency(scan, obj, probe, grid_pos, fit=fit, size=size, chunk=chunk,
                                           progress=progress)
        timings["consistency"] = time.perf_counter() - t
    timings["wall"] = time.perf_counter() - t_start
    return rec


def _window(size: tuple[int, int]) -> np.ndarray:
    """Separable Hann window, the documented fallback weight when no probe is known."""
    return np.outer(np.hanning(size[0] + 2)[1:-1], np.hanning(size[1] + 2)[1:-1]).astype(np.float32)


def data_consistency(scan: Scan, obj: np.ndarray, probe: np.ndarray, grid_pos: np.ndarray, *, fit: str = "none",
                     size=None, chunk: int = 512, progress=None) -> Consistency:
    """Propagate the stitched object with the probe through the forward model and compare with the data.

    Per frame n the sums S_aa = Σ I_pred, S_ab = Σ √I_pred·√I, S_bb = Σ I (valid pixels) are kept (O(N) memory),
    so the global scale s = ΣS_ab/ΣS_aa and the per-frame errors (s²S_aa − 2sS_ab + S_bb)/S_bb follow exactly.
    """
    size = size or scan.frame_shape
    mask = None if scan.mask is None else fit_mask(scan.mask, size, fit)
    n = scan.n_frames
    saa, sab, sbb = (np.zeros(n) for _ in range(3))
    for s, frames in stream_frames(scan, chunk):
        meas = np.sqrt(np.maximum(fit_frames(frames, size, fit), 0))
        pred = np.abs(far_field(exit_waves(probe, obj, grid_pos[s : s + len(frames)])))
        if mask is not None:
            meas, pred = meas * mask, pred * mask
        e = s + len(frames)
        saa[s:e] = np.sum(pred * pred, axis=(1, 2))
        sab[s:e] = np.sum(pred * meas, axis=(1, 2))
        sbb[s:e] = np.sum(meas * meas, axis=(1, 2))
        if progress is not None:
            progress(e, n, "consistency")
    scale = float(sab.sum() / max(saa.sum(), 1e-30))
    per = (scale**2 * saa - 2 * scale * sab + sbb) / np.maximum(sbb, 1e-30)
    err = float((scale**2 * saa.sum() - 2 * scale * sab.sum() + sbb.sum()) / max(sbb.sum(), 1e-30))
    return Consistency(error=err, scale=scale, per_frame=per.astype(np.float32))
