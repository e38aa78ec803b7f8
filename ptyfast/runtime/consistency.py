"""Data consistency: how well a stitched object, propagated with the probe through the forward model, explains
the measured intensities — a quality figure that needs no ground truth.

Per frame n three sums are kept (O(N) memory): S_aa = Σ I_pred, S_ab = Σ √I_pred·√I and S_bb = Σ I over the
valid detector pixels; the global amplitude scale and the per-frame errors follow from them exactly
(:func:`consistency_from_sums`), and sums of disjoint frame ranges concatenate, so the pass can be split over
threads or a cluster's workers. The reconstruct job computes it on an evenly spaced sample of frames
(:func:`consistency_sample`) whose measured amplitudes the reader kept from its one read of the file.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ptyfast import threads
from ptyfast.errors import ResultError
from ptyfast.kernels import exit_waves, far_field_unshifted
from ptyfast.models.preprocess import fit_frames, fit_mask
from ptyfast.runtime.stream import CHUNK, stream_frames
from ptyfast.scan import Scan


@dataclass
class Consistency:
    """Data consistency of the stitched object with the measured intensities, no ground truth needed.

    ``error`` is the normalised amplitude error ε = Σ(s·√I_pred − √I)² / Σ I over valid detector pixels,
    overall and per frame (0 = perfect). ``flat_error`` is the same figure for a flat object under the same
    probe on the same frames — the baseline a result must beat to explain anything (computed where the
    measured frames are kept). ``scale`` s is the least-squares amplitude scale between prediction and
    measurement (the network's input normalisation removes the absolute scale; s ≈ 1 when the stitched
    amplitude is right in absolute terms). ``reconstruct`` evaluates an evenly spaced sample of frames
    (``frames``; all of them up to :data:`CONSISTENCY_FRAMES`), whose measured amplitudes it keeps from its one
    read of the file.
    """

    error: float
    scale: float
    per_frame: np.ndarray
    frames: np.ndarray | None = None  # the frames per_frame holds (None: every frame, in order)
    flat_error: float | None = None  # ε of a flat object with the same probe on the same frames


#: Frames the reconstruct job's consistency figure is computed on: an evenly spaced sample of at most this many,
#: whose measured amplitudes are kept from the one read of the file (≤ 32 MiB at 128²), so the figure needs no
#: second pass over the file and its cost does not grow with the scan. 0 = every frame, read again at the end.
CONSISTENCY_FRAMES = 512


def consistency_sample(n_frames: int, limit: int = CONSISTENCY_FRAMES) -> np.ndarray:
    """Sorted indices of the frames the consistency figure is computed on: every frame when there are at most
    ``limit`` (or ``limit`` is 0), else ``limit`` evenly spaced ones (first and last included)."""
    if limit <= 0 or n_frames <= limit:
        return np.arange(n_frames)
    return np.unique(np.linspace(0, n_frames - 1, limit).round().astype(np.int64))


def measured_amplitudes(frames: np.ndarray, fft_mask: np.ndarray | None = None) -> np.ndarray:
    """√I of fitted frames (N, H, W), in the FFT's own (corner) pixel order, invalid pixels zeroed
    (``fft_mask``: the fitted detector mask, ifftshifted). The consistency sums do not depend on the pixel
    order, so the real measured amplitudes are shifted rather than each complex far field."""
    meas = np.fft.ifftshift(np.sqrt(np.maximum(frames, 0, dtype=np.float32)), axes=(-2, -1))
    if fft_mask is not None:  # zeroed, not multiplied: a masked pixel may hold NaN or a fill value
        np.copyto(meas, np.float32(0.0), where=~np.asarray(fft_mask, bool))
    return meas


def frame_sums(obj: np.ndarray, probe: np.ndarray, grid_pos: np.ndarray, meas: np.ndarray, mask=None, *,
               pool: ThreadPoolExecutor | None = None, fft_mask: np.ndarray | None = None) -> np.ndarray:
    """(3, n) sums S_aa, S_ab, S_bb of the frames at ``grid_pos`` whose :func:`measured_amplitudes` are
    ``meas``. The frames are split over :func:`ptyfast.threads.get` workers (``pool``, or a pool of its own),
    each FFT on one thread: the gather and the element-wise work are single-threaded numpy, so splitting the
    frames, not the FFTs, keeps every core busy. ``mask``: the fitted detector mask (centred order)."""
    if fft_mask is None and mask is not None:
        fft_mask = np.fft.ifftshift(mask)
    sums = np.zeros((3, len(meas)))

    def add(i, e):
        with threads.limited(1):
            pred = np.abs(far_field_unshifted(exit_waves(probe, obj, grid_pos[i:e])))
        if fft_mask is not None:
            pred *= fft_mask
        sums[0, i:e] = np.sum(pred * pred, axis=(1, 2))
        sums[1, i:e] = np.sum(pred * meas[i:e], axis=(1, 2))
        sums[2, i:e] = np.sum(meas[i:e] * meas[i:e], axis=(1, 2))

    workers = threads.get()
    own = pool is None
    pool = ThreadPoolExecutor(workers) if own else pool
    try:
        share = max(min(-(-len(meas) // workers), CHUNK // 2), 1)
        for job in [pool.submit(add, k, min(k + share, len(meas))) for k in range(0, len(meas), share)]:
            job.result()
    finally:
        if own:
            pool.shutdown()
    return sums


def consistency_from_sums(sums: np.ndarray, frames: np.ndarray | None = None, n_frames: int | None = None
                          ) -> Consistency:
    """The global scale s = ΣS_ab/ΣS_aa and the errors (s²S_aa − 2sS_ab + S_bb)/S_bb, per frame and overall;
    ``frames``: the frames the sums are of, when not all ``n_frames`` of the scan."""
    saa, sab, sbb = sums
    scale = float(sab.sum() / max(saa.sum(), 1e-30))
    per = (scale**2 * saa - 2 * scale * sab + sbb) / np.maximum(sbb, 1e-30)
    err = float((scale**2 * saa.sum() - 2 * scale * sab.sum() + sbb.sum()) / max(sbb.sum(), 1e-30))
    sampled = frames is not None and (n_frames is None or len(frames) < n_frames)
    return Consistency(error=err, scale=scale, per_frame=per.astype(np.float32),
                       frames=np.asarray(frames) if sampled else None)


def sampled_consistency(obj: np.ndarray, probe: np.ndarray, grid_pos: np.ndarray, frames: np.ndarray,
                        measured: np.ndarray, mask: np.ndarray | None, n_frames: int) -> Consistency:
    """The consistency of ``obj`` on the kept sample ``frames`` (their :func:`measured_amplitudes` ``measured``)
    of a scan of ``n_frames``, with the flat object's ε on the same frames as its baseline."""
    consistency = consistency_from_sums(frame_sums(obj, probe, grid_pos[frames], measured, mask), frames=frames,
                                        n_frames=n_frames)
    flat = np.ones(obj.shape, np.complex64)
    consistency.flat_error = consistency_from_sums(frame_sums(flat, probe, grid_pos[frames], measured, mask)).error
    return consistency


def consistency_sums(scan: Scan, obj: np.ndarray, probe: np.ndarray, grid_pos: np.ndarray, *, fit: str = "none",
                     size=None, chunk: int = CHUNK, start: int = 0, stop: int | None = None, progress=None
                     ) -> np.ndarray:
    """Per-frame sums (3, n) S_aa, S_ab, S_bb over valid pixels, frames [start, stop): what
    :func:`consistency_from_sums` needs (sums of disjoint ranges concatenate).

    The reader thread prepares each chunk's measured amplitudes while :func:`ptyfast.threads.get` workers share
    the chunk's exit waves and FFTs (:func:`frame_sums`)."""
    size = size or scan.frame_shape
    mask = None if scan.mask is None else np.fft.ifftshift(fit_mask(scan.mask, size, fit))
    stop = scan.n_frames if stop is None else stop
    sums = np.zeros((3, stop - start))
    with ThreadPoolExecutor(threads.get()) as pool:
        for s, meas in stream_frames(scan, chunk, start=start, stop=stop,
                                     transform=lambda frames: measured_amplitudes(fit_frames(frames, size, fit), mask)):
            sums[:, s - start : s - start + len(meas)] = frame_sums(obj, probe, grid_pos[s : s + len(meas)], meas,
                                                                   pool=pool, fft_mask=mask)
            if progress is not None:
                progress(s - start + len(meas), stop - start, "consistency")
    return sums


def data_consistency(scan: Scan, obj: np.ndarray, probe: np.ndarray, grid_pos: np.ndarray, *, fit: str = "none",
                     size=None, chunk: int = CHUNK, progress=None) -> Consistency:
    """Propagate the stitched object with the probe through the forward model and compare with every frame of
    the data (a second pass over the file: :func:`consistency_sums`, :func:`consistency_from_sums`)."""
    return consistency_from_sums(consistency_sums(scan, obj, probe, grid_pos, fit=fit, size=size, chunk=chunk,
                                                  progress=progress))


#: A result whose data consistency ε exceeds EPSILON_WARN, or FLAT_RATIO_WARN × the ε of a flat object under the
#: same probe, does not explain its data. The thresholds sit well above the ε of good network results and of a
#: refined real scan, and below that of a wrong probe or unmasked pinned pixels (measured values in
#: docs/benchmarks.md).
EPSILON_WARN = 0.5
FLAT_RATIO_WARN = 0.7


def check_explains_data(rec, provenance: dict, *, strict: bool = False, name: str = "the scan") -> None:
    """Warn (recorded in ``provenance["warnings"]``) when the result's data consistency ε exceeds
    :data:`EPSILON_WARN` or :data:`FLAT_RATIO_WARN` times a flat object's, naming the likely causes; with
    ``strict`` raise :class:`~ptyfast.errors.ResultError` instead."""
    c = rec.consistency
    if c is None:
        return
    flat = c.flat_error
    if c.error > EPSILON_WARN:
        why = f"data consistency ε = {c.error:.3f} > {EPSILON_WARN}"
    elif flat is not None and c.error > FLAT_RATIO_WARN * flat:
        why = (f"data consistency ε = {c.error:.3f}, {c.error / flat:.2f} × the {flat:.3f} of a flat object "
               f"under the same probe (> {FLAT_RATIO_WARN})")
    else:
        return
    message = (f"{name}: the result does not explain its data ({why}); likely causes: a wrong probe (try "
               "--estimate-probe, or give --probe, e.g. from ptyfast refine of part of the scan), unmasked bad detector pixels, near-field data, or a wrong geometry (distance, pixel "
               "size, energy).")
    if strict:
        raise ResultError(message + " Nothing was written (--strict).")
    provenance.setdefault("warnings", []).append(message)
    provenance["explains_data"] = False
