"""The streaming reconstruct pipeline: HDF5 chunks → preprocess → batched inference → stitching,
then a data-consistency pass through the forward model.

Stages overlap: a background thread reads, validates and preprocesses ``chunk`` frames at a time into a bounded
queue (at most ``queue_depth`` chunks in flight), the calling thread hands batches to the backend (on the CPU
several run side by side, :meth:`~ptyfast.runtime.backends.Backend.map`), and a second background thread turns
each batch's outputs into complex patches and stitches them in frame order (a queue of two batches) while the
next batches are inferred — so the wall time approaches the inference time, not the sum of the stages.
These two helper threads are pipeline stages, not thread pools: ``--threads`` sets the libraries' pools, and the
number of workers the consistency pass spreads its frames over (it runs alone, after the blend).

Memory: at most ``queue_depth`` chunks read ahead and two batches of outputs waiting, so peak memory is
O(chunk · H · W) for the data plus O(object area) for the stitched object and its weight map, independent of
the number of frames (the patches kept for the phase-offset solve included, below).

Stitching (see :func:`ptyfast.kernels.stitch`): each predicted patch A·exp(iφ) is placed at its true
sub-pixel position (bilinear) and blended with weights w = |P|² (the probe intensity: pixels the probe
barely lit carry little information), O = Σ w·patch / Σ w. ``weighting="uniform"`` reproduces the seed
paper's stitching (w = 1 at integer-rounded positions) for comparison. ``align_phase`` solves every patch's
phase offset from the overlaps (:mod:`ptyfast.runtime.phase_align`; one pattern cannot determine it) before
blending: the patches are then kept, cropped to where the weight is ≥ 1 % of its maximum (63 kB per frame for
the default probe), and blended once all are predicted. In one process they wait in a
:class:`~ptyfast.runtime.spilled_patches.SpilledPatches` (overlap products taken as frames arrive; patches in
memory up to 128 MiB, then in an unlinked temporary file); partials of several workers keep them in memory.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ptyfast import threads
from ptyfast.choices import Fit, Weighting
from ptyfast.errors import InputError
from ptyfast.kernels import exit_waves, far_field_unshifted, normalise, overlap_add
from ptyfast.models.preprocess import fit_frames, fit_mask, fit_probe, model_grid, preprocess
from ptyfast.physics.probe import lit_pixels
from ptyfast.runtime.phase_align import offsets_from_overlaps, solve_phase_offsets, support_box
from ptyfast.runtime.spilled_patches import SpilledPatches
from ptyfast.scan import Scan, validate_frames


@dataclass
class Consistency:
    """Data consistency of the stitched object with the measured intensities, no ground truth needed.

    ``error`` is the normalised amplitude error ε = Σ(s·√I_pred − √I)² / Σ I over valid detector pixels,
    overall and per frame (0 = perfect). ``flat_error`` is the same figure for a flat object under the same
    probe on the same frames — the baseline a result must beat to explain anything (0.05–0.2 on the
    held-out and real scans measured; computed where the measured frames are kept). ``scale`` s is
    the least-squares amplitude scale between prediction and measurement (the network's input
    normalisation removes the absolute scale; s ≈ 1 when the stitched amplitude is right in absolute terms).
    ``reconstruct`` evaluates an evenly spaced sample of frames (``frames``; all of them up to
    :data:`CONSISTENCY_FRAMES`), whose measured amplitudes it keeps from its one read of the file.
    """

    error: float
    scale: float
    per_frame: np.ndarray
    frames: np.ndarray | None = None  # the frames per_frame holds (None: every frame, in order)
    flat_error: float | None = None  # ε of a flat object with the same probe on the same frames


#: Frames read (and preprocessed) per chunk. Up to ``queue_depth`` + 2 chunks are in flight at once, raw and
#: preprocessed: 128 frames of 128² keep that to ≈ 40 MB (512 held ≈ 170 MiB more peak RSS here, and were no faster).
CHUNK = 128

#: Frames the reconstruct job's consistency figure is computed on: an evenly spaced sample of at most this many,
#: whose measured amplitudes are kept from the one read of the file (≤ 32 MiB at 128²), so the figure needs no
#: second pass over the file and its cost does not grow with the scan. 0 = every frame, read again at the end.
CONSISTENCY_FRAMES = 512


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
    notes: list = field(default_factory=list)  # warnings from stitching (e.g. a refused offset fit)
    mask: np.ndarray | None = None  # the detector mask the data were read with (True = valid), as written out

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


def _reader(scan: Scan, chunk: int, start: int, stop: int, out: queue.Queue, stop_event: threading.Event,
            stats: dict, transform=None) -> None:
    try:
        for s in range(start, stop, chunk):
            if stop_event.is_set():
                return
            t = time.perf_counter()
            frames = scan.frames(s, min(s + chunk, stop))
            validate_frames(frames, start=s, mask=scan.mask, source=scan.meta.get("source", "the scan"))
            t2 = time.perf_counter()
            stats["read"] += t2 - t
            if transform is not None:
                frames = transform(frames)
                stats["preprocess"] = stats.get("preprocess", 0.0) + time.perf_counter() - t2
            out.put((s, frames))
        out.put(None)
    except BaseException as exc:  # forwarded to the consumer, which re-raises
        out.put(exc)


def stream_frames(scan: Scan, chunk: int, *, start: int = 0, stop: int | None = None, queue_depth: int = 3,
                  stats: dict | None = None, transform=None):
    """Yield (start, frames) chunks of frames [start, stop) read and validated — and passed through
    ``transform`` when given (e.g. preprocessing) — by a background thread (bounded queue)."""
    stats = stats if stats is not None else {"read": 0.0}
    stats.setdefault("read", 0.0)
    stop = scan.n_frames if stop is None else stop
    q: queue.Queue = queue.Queue(maxsize=queue_depth)
    halt = threading.Event()
    th = threading.Thread(target=_reader, args=(scan, chunk, start, stop, q, halt, stats, transform), daemon=True)
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
        halt.set()
        while th.is_alive():  # drain so the reader can finish
            try:
                q.get_nowait()
            except queue.Empty:
                th.join(0.05)


def check_far_field(scan: Scan) -> None:
    """Refuse near-field data (checked before anything about frame sizes: no --fit makes it usable)."""
    if scan.near_field:
        reason = scan.meta.get("near_field_reason", "")
        raise InputError(
            f"{scan.meta.get('source', 'the scan')} holds near-field (holographic) data{f' ({reason})' if reason else ''}; "
            "ptyfast's networks reconstruct far-field ptychography only."
        )


@dataclass
class StitchPlan:
    """What stitching needs besides the patches; fixed by the scan's positions, its probe and the model.

    ``grid_pos`` (N, 2) are the windows' top-left corners on the object grid (``shape``), whose pixel (0, 0)
    is scan position ``origin``. Patches are kept cropped to ``box`` (where the weight is ≥ 1 % of its
    maximum) when their phase offsets are solved (``align``); ``weight`` is the full-window weight."""

    size: tuple[int, int]
    fit: str
    probe: np.ndarray | None
    grid_pos: np.ndarray
    origin: np.ndarray
    shape: tuple[int, int]
    weight: np.ndarray
    align: bool
    box: tuple[slice, slice]
    mask: np.ndarray | None

    @property
    def box_offset(self) -> np.ndarray:
        return np.array([self.box[0].start or 0, self.box[1].start or 0], float)

    @property
    def box_weight(self) -> np.ndarray:
        return np.ascontiguousarray(self.weight[self.box])

    @property
    def solve_weight(self) -> np.ndarray:
        """Weights of the phase-offset solve over the box: 1 on the lit pixels (|P|² ≥ 10 % of its maximum,
        where the ``lit`` loss held the network to its labels), 0 elsewhere. Measured against the |P|²
        weights on the same predictions: release scans (600²) +5.57 vs +5.38 dB phase over flat, the Siemens
        star's held-out half +5.51 vs +5.42."""
        return lit_pixels(self.box_weight).astype(np.float32)

    @property
    def probe_power(self) -> float | None:
        return float(np.sum(np.abs(self.probe) ** 2)) if self.probe is not None else None


def plan_stitch(positions: np.ndarray, frame_size: int, manifest, probe: np.ndarray | None, *, fit: str = "none",
                weighting: str = "probe", align_phase: bool | None = None, mask: np.ndarray | None = None,
                weight_probe: np.ndarray | None = None) -> StitchPlan:
    """The :class:`StitchPlan` of a scan (see :func:`reconstruct_scan` for the options); ``weight_probe``, when
    given, sets the |P|² stitching weights instead of ``probe`` (which the consistency pass uses)."""
    weighting = Weighting.check(weighting, "stitching weighting")
    fit = Fit.check(fit, "--fit mode")
    size = tuple(manifest.input_size)
    if probe is not None:
        probe = fit_probe(probe, size, fit)
    grid = model_grid(positions, frame_size, size, fit, mask)
    grid_pos = grid.positions
    if weighting == "uniform":
        grid_pos = np.round(grid_pos)
        w = np.ones(size, np.float32)
    else:
        lighting = probe if weight_probe is None else fit_probe(weight_probe, size, fit)
        w = (np.abs(lighting) ** 2).astype(np.float32) if lighting is not None else _window(size)
    if align_phase is None:
        align_phase = getattr(manifest, "phase_offsets", "absolute") == "free"
    box = support_box(w) if align_phase else (slice(0, size[0]), slice(0, size[1]))
    return StitchPlan(size=size, fit=fit, probe=probe, grid_pos=grid_pos, origin=grid.origin, shape=grid.shape,
                      weight=w, align=bool(align_phase), box=box, mask=grid.mask)


@dataclass
class PartialStitch:
    """The stitching of frames [start, stop).

    Blending is linear, so partials of disjoint frame ranges add up: ``num`` = Σ w·patch and ``wsum`` = Σ w on
    the plan's object grid. When the phase offsets are to be solved (or the caller asks to keep them) the
    patches themselves are kept instead (cropped to the plan's box), since the offsets depend on all of them:
    in memory (``patches``, which partials of several workers can combine), or, in one process, with their
    overlap products taken as they arrive and the patches beyond a memory budget spilled to a temporary file
    (``spilled``: memory that does not grow with the frames; ``num`` and ``wsum`` then hold the zeroed grid and
    the weight map, summed while stitching)."""

    start: int
    stop: int
    num: np.ndarray | None = None
    wsum: np.ndarray | None = None
    patches: np.ndarray | None = None
    spilled: SpilledPatches | None = None
    timings: dict = field(default_factory=dict)
    measured_frames: np.ndarray | None = None  # frames whose measured amplitudes are kept (consistency sample)
    measured: np.ndarray | None = None  # (m, H, W) float32 their √I, FFT pixel order, masked (measured_amplitudes)

    def release(self) -> None:
        """Drop the sums or kept patches (and the spill file)."""
        if self.spilled is not None:
            self.spilled.close()
        self.num = self.wsum = self.patches = self.spilled = self.measured = None


def complex_patches(amp: np.ndarray, pha: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """A·exp(iφ) as complex64, computed in float32 (``np.exp(1j * φ)`` would go through complex128), into
    ``out`` when given."""
    out = np.empty(amp.shape, np.complex64) if out is None else out
    np.multiply(amp, np.cos(pha, dtype=np.float32), out=out.real)
    np.multiply(amp, np.sin(pha, dtype=np.float32), out=out.imag)
    return out


class _StitchStage:
    """The stitching stage in a background thread: ``put(start, amplitude, phase)`` hands over one batch's
    outputs (blocking while ``depth`` batches wait), ``close()`` waits for them and re-raises the stage's
    error, if any. Numpy releases the GIL in the heavy parts, so stitching overlaps the next inference.
    ``setup()``, when given, runs first in the stage's thread (while the first chunk is read and inferred)."""

    def __init__(self, work, depth: int = 2, setup=None) -> None:
        self._work = work
        self._setup = setup
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._setup is not None:
            try:
                self._setup()
            except BaseException as exc:
                self._error = exc
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._error is None:  # after an error, drain without working so put() never blocks forever
                try:
                    self._work(*item)
                except BaseException as exc:
                    self._error = exc

    def put(self, *item) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(item)

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def stitch_frames(scan: Scan, backend, plan: StitchPlan, start: int = 0, stop: int | None = None, *,
                  batch: int | None = None, chunk: int = CHUNK, keep_patches: bool | None = None, spill: bool = False,
                  progress=None, keep_measured: np.ndarray | None = None) -> PartialStitch:
    """Read, preprocess and infer frames [start, stop) of ``scan`` and stitch them (see :class:`PartialStitch`);
    kept patches are spilled (:mod:`ptyfast.runtime.spilled_patches`) when ``spill``. The measured amplitudes
    of the frames ``keep_measured`` (sorted indices in [start, stop)) are kept for the consistency figure.

    Reading and stitching run in background threads beside inference (see the module docstring);
    ``timings`` holds each stage's own busy time, so their sum may exceed the wall time."""
    stop = scan.n_frames if stop is None else stop
    batch = backend.default_batch if batch is None else batch
    keep = plan.align if keep_patches is None else keep_patches
    timings = {"read": 0.0, "preprocess": 0.0, "infer": 0.0, "stitch": 0.0}
    part = PartialStitch(start, stop, timings=timings)
    w = plan.weight
    spilling = keep and spill

    def setup() -> None:  # finding the overlapping pairs takes a while: in the stitching thread, beside reading
        t = time.perf_counter()
        part.spilled = SpilledPatches(plan.grid_pos[start:stop] + plan.box_offset, plan.solve_weight)
        timings["stitch"] += time.perf_counter() - t

    if keep and not spill:  # filled in place: no list of batches to concatenate (a second copy of every patch)
        part.patches = np.empty((stop - start, *w[plan.box].shape), np.complex64)
    elif not keep:
        part.num = np.zeros(plan.shape, np.complex64)
        part.wsum = np.zeros(plan.shape, np.float32)

    def stitch(first: int, amp: np.ndarray, pha: np.ndarray) -> None:
        t = time.perf_counter()
        if spilling:  # only the box is kept: build the complex patches there alone
            if part.num is None:  # in this thread, beside inference: the grid's pages are touched here, not after
                part.num = np.zeros(plan.shape, np.complex64)
                part.num.fill(0)
                part.wsum = np.zeros(plan.shape, np.float32)
            part.spilled.add(complex_patches(amp[:, plan.box[0], plan.box[1]], pha[:, plan.box[0], plan.box[1]]))
            box_w = plan.box_weight
            # the weight map does not depend on the offsets: summed now, so the blend only adds the patches
            overlap_add(part.wsum, np.broadcast_to(box_w, (len(amp), *box_w.shape)),
                        plan.grid_pos[first : first + len(amp)] + plan.box_offset)
        elif keep:
            complex_patches(amp[:, plan.box[0], plan.box[1]], pha[:, plan.box[0], plan.box[1]],
                            out=part.patches[first - start : first - start + len(amp)])
        else:
            patches = complex_patches(amp, pha)
            overlap_add(part.num, patches, plan.grid_pos[first : first + len(patches)], weights=w,
                        weight_accum=part.wsum)
        timings["stitch"] += time.perf_counter() - t

    if keep_measured is not None and plan.probe is not None:
        part.measured_frames = np.asarray(keep_measured, np.int64)
        part.measured = np.empty((len(part.measured_frames), *plan.size), np.float32)
    fft_mask = None if plan.mask is None else np.fft.ifftshift(plan.mask)
    cursor = [start]

    stage = _StitchStage(stitch, setup=setup if spilling else None)
    outputs = None
    try:
        def prepare(frames: np.ndarray) -> np.ndarray:  # in the reader's thread
            fitted = fit_frames(frames, plan.size, plan.fit)
            if part.measured is not None:  # this chunk's frames of the consistency sample
                first = cursor[0]
                lo, hi = np.searchsorted(part.measured_frames, [first, first + len(frames)])
                if hi > lo:
                    part.measured[lo:hi] = measured_amplitudes(fitted[part.measured_frames[lo:hi] - first], fft_mask)
                cursor[0] = first + len(frames)
            return preprocess(fitted, backend.manifest, probe_power=plan.probe_power, mask=plan.mask,
                              probe=plan.probe)

        firsts: collections.deque = collections.deque()  # the first frame of each batch handed to the backend

        def batches():
            for s, x in stream_frames(scan, chunk, start=start, stop=stop, stats=timings, transform=prepare):
                for b in range(0, len(x), batch):
                    firsts.append(s + b)
                    yield x[b : b + batch]

        outputs = backend.map(batches())  # several batches side by side on the CPU (Backend.map)
        while True:
            t = time.perf_counter()
            try:
                amp, pha = next(outputs)
            except StopIteration:
                break
            timings["infer"] += time.perf_counter() - t  # waiting for inference (and the reader, when behind)
            first = firsts.popleft()
            stage.put(first, amp, pha)
            if progress is not None:
                progress(first + len(amp) - start, stop - start, "stitch")
    finally:
        if outputs is not None:  # on an error: stop the batches still running and the reader now, not at GC
            outputs.close()
        stage.close()
    return part


def combine_partials(parts: list[PartialStitch]) -> PartialStitch:
    """One partial from partials of adjacent frame ranges (sums added; kept patches concatenated in frame
    order; timings added)."""
    parts = sorted(parts, key=lambda p: p.start)
    for a, b in zip(parts, parts[1:]):
        if a.stop != b.start:
            raise ValueError(f"partials [{a.start}, {a.stop}) and [{b.start}, {b.stop}) are not adjacent")
    out = PartialStitch(parts[0].start, parts[-1].stop)
    if all(p.patches is not None for p in parts):
        out.patches = np.concatenate([p.patches for p in parts])
    elif all(p.num is not None for p in parts):
        out.num = np.sum([p.num for p in parts], axis=0) if len(parts) > 1 else parts[0].num
        out.wsum = np.sum([p.wsum for p in parts], axis=0) if len(parts) > 1 else parts[0].wsum
    else:
        raise ValueError("cannot combine partials that keep patches with partials that keep sums")
    for p in parts:
        for k, v in p.timings.items():
            out.timings[k] = out.timings.get(k, 0.0) + v
    return out


BLEND_CHUNK = 1024  # patches read back from the spill file at a time for the blend
ROTATE = 64  # patches rotated by their phase offsets at a time (4 MiB for the default probe's 89² box)


def finish_stitch(plan: StitchPlan, part: PartialStitch, fit=None, notes: list | None = None
                  ) -> tuple[np.ndarray, np.ndarray, dict]:
    """(object, weight map, timings) from the partial of all frames: solve the phase offsets when the plan
    says so, blend kept patches, normalise. With ``fit(patches, z) → (z, note)`` the solved offsets are then
    refined (e.g. against the data, :mod:`ptyfast.runtime.offset_fit`; a note is appended to ``notes``) and
    the object takes its phase from the blend with the fitted offsets and its amplitude from the blend with
    the solved ones (the fit's model: offsets move phase, never amplitude)."""
    timings: dict = {}
    t = time.perf_counter()
    if part.patches is None and part.spilled is None:
        obj = normalise(part.num, part.wsum, out=part.num)
        timings["stitch"] = time.perf_counter() - t
        return obj, part.wsum, timings
    pos = plan.grid_pos[part.start : part.stop] + plan.box_offset
    z = np.ones(len(pos), np.complex64)
    solved = None
    if plan.align and len(pos):
        z = offsets_from_overlaps(part.spilled.matrix()) if part.spilled is not None else \
            solve_phase_offsets(part.patches, pos, plan.solve_weight)
        timings["align"] = time.perf_counter() - t
        if fit is not None:
            t_fit = time.perf_counter()
            kept = part.patches if part.spilled is None else np.concatenate(
                [c for _, c in part.spilled.chunks(BLEND_CHUNK)])
            solved, (z, note) = z, fit(kept, z)
            del kept
            if note and notes is not None:
                notes.append(note)
            timings["fit_offsets"] = time.perf_counter() - t_fit
    if part.spilled is not None and part.num is not None:  # the weight map was summed while stitching
        num, wsum, wacc = part.num, part.wsum, None
    else:
        num = np.zeros(plan.shape, np.complex64)
        wsum = wacc = np.zeros(plan.shape, np.float32)
    _blend(plan, part, pos, z, num, wacc)
    obj = normalise(num, wsum, out=num)  # in place: no second object-sized array
    if solved is not None and solved is not z:
        amplitude = np.abs(normalise(_blend(plan, part, pos, solved, np.zeros(plan.shape, np.complex64)), wsum))
        mag = np.abs(obj)
        np.multiply(obj, np.divide(amplitude, mag, out=np.zeros_like(mag), where=mag > 0), out=obj)
    timings["stitch"] = time.perf_counter() - t
    return obj, wsum, timings


def _blend(plan: StitchPlan, part: PartialStitch, pos: np.ndarray, z: np.ndarray, num: np.ndarray,
           wacc: np.ndarray | None = None) -> np.ndarray:
    """``num`` += Σ_k z_k w·p_k over the kept patches (and ``wacc`` += Σ w), rotated ``ROTATE`` at a time into
    one reused buffer: no second copy of every patch, no fresh memory per chunk."""
    chunks = part.spilled.chunks(BLEND_CHUNK) if part.spilled is not None else \
        ((s, part.patches[s : s + BLEND_CHUNK]) for s in range(0, len(pos), BLEND_CHUNK))
    rotated = None
    for s, patches in chunks:
        for a in range(0, len(patches), ROTATE):
            b = min(a + ROTATE, len(patches))
            rotated = np.empty((ROTATE, *patches.shape[1:]), np.complex64) if rotated is None else rotated
            out = np.multiply(patches[a:b], z[s + a : s + b, None, None], out=rotated[: b - a])
            overlap_add(num, out, pos[s + a : s + b], weights=plan.box_weight, weight_accum=wacc)
    return num


def reconstruct_scan(
    scan: Scan,
    backend,
    *,
    batch: int | None = None,
    chunk: int = CHUNK,
    fit: str = "none",
    weighting: str = "probe",
    align_phase: bool | None = None,
    consistency: bool = True,
    probe: np.ndarray | None = None,
    progress=None,
    offset_fitter=None,
) -> Reconstruction:
    """Reconstruct ``scan`` with an opened backend (see :func:`ptyfast.runtime.backends.open_backend`).

    Parameters
    ----------
    scan : Scan
        Far-field scan; diffraction may be lazy (HDF5), it is streamed in ``chunk``-frame pieces.
    backend : Backend
        Maps (B, 1, H, W) preprocessed patterns to (amplitude, phase).
    batch : int, optional
        Inference batch size (default: the backend's, see :attr:`Backend.default_batch`).
    fit : {"none", "crop", "bin", "pad"}
        How to bring frames to the model's input size (see :func:`ptyfast.models.preprocess.fit_frames`).
    weighting : {"probe", "uniform"}
        Stitching weights: |P|² at sub-pixel positions, or the paper's uniform average at rounded positions.
    align_phase : bool or None
        Solve the per-patch phase offsets from the overlaps before blending; None = when the model's
        manifest says its outputs carry free offsets (``phase_offsets == "free"``).
    consistency : bool
        Compute the forward-model consistency figure (needs a probe), on :func:`consistency_sample`'s frames.
    probe : complex (H, W), optional
        Overrides ``scan.probe`` (e.g. the model's probe when the file has none).
    progress : callable(done_frames, total_frames, stage), optional
    offset_fitter : callable(scan, plan, patches, z) → (z, note), optional
        Refines the solved phase offsets, e.g. :func:`ptyfast.runtime.offset_fit.fit_offsets` (to the data).
    """
    check_far_field(scan)
    t_start = time.perf_counter()
    plan = plan_stitch(scan.positions, scan.frame_shape[0], backend.manifest,
                       scan.probe if probe is None else probe, fit=fit, weighting=weighting,
                       align_phase=align_phase, mask=scan.mask)
    sample = consistency_sample(scan.n_frames) if consistency else None
    part = stitch_frames(scan, backend, plan, batch=batch, chunk=chunk, spill=True, progress=progress,
                         keep_measured=sample)
    return finish_reconstruction(scan, plan, part, consistency=consistency, chunk=chunk, progress=progress,
                                 t_start=t_start, release=True, offset_fitter=offset_fitter)


def finish_reconstruction(scan: Scan, plan: StitchPlan, part: PartialStitch, *, consistency: bool = True,
                          chunk: int = CHUNK, progress=None, t_start: float | None = None,
                          consistency_fn=None, release: bool = False, offset_fitter=None) -> Reconstruction:
    """The :class:`Reconstruction` from the partial of all frames: blend, then (with a probe) the consistency
    pass, computed by ``consistency_fn(obj)`` when given (e.g. spread over a cluster). ``release`` drops the
    partial's sums or kept patches once blended (the caller is done with it: 1.3 GB of patches at 20,000
    frames no longer held through the consistency pass and the output)."""
    t_start = time.perf_counter() if t_start is None else t_start
    fit = None if offset_fitter is None else (lambda patches, z: offset_fitter(scan, plan, patches, z))
    notes: list[str] = []
    obj, wsum, extra = finish_stitch(plan, part, fit, notes)
    kept = (part.measured_frames, part.measured) if part.measured is not None else None
    if release:
        part.release()
    timings = dict(part.timings)
    timings["stitch"] = timings.get("stitch", 0.0) + extra.pop("stitch")
    timings.update(extra)
    timings["wall_stitched"] = time.perf_counter() - t_start
    rec = Reconstruction(object=obj, weight=wsum, positions=plan.grid_pos, origin=plan.origin, probe=plan.probe,
                         n_frames=scan.n_frames, timings=timings, notes=notes, mask=scan.mask)
    if consistency and plan.probe is not None:
        t = time.perf_counter()
        if consistency_fn is not None:
            rec.consistency = consistency_fn(obj)
        elif kept is not None:
            frames, measured = kept
            rec.consistency = consistency_from_sums(frame_sums(obj, plan.probe, plan.grid_pos[frames], measured,
                                                               plan.mask), frames=frames, n_frames=scan.n_frames)
            flat = np.ones(obj.shape, np.complex64)
            rec.consistency.flat_error = consistency_from_sums(
                frame_sums(flat, plan.probe, plan.grid_pos[frames], measured, plan.mask)).error
        else:
            rec.consistency = data_consistency(scan, obj, plan.probe, plan.grid_pos, fit=plan.fit, size=plan.size,
                                               chunk=chunk, progress=progress)
        timings["consistency"] = time.perf_counter() - t
    timings["wall"] = time.perf_counter() - t_start
    return rec


def _window(size: tuple[int, int]) -> np.ndarray:
    """Separable Hann window, the documented fallback weight when no probe is known."""
    return np.outer(np.hanning(size[0] + 2)[1:-1], np.hanning(size[1] + 2)[1:-1]).astype(np.float32)


def consistency_sums(scan: Scan, obj: np.ndarray, probe: np.ndarray, grid_pos: np.ndarray, *, fit: str = "none",
                     size=None, chunk: int = CHUNK, start: int = 0, stop: int | None = None, progress=None
                     ) -> np.ndarray:
    """Per-frame sums (3, n) S_aa = Σ I_pred, S_ab = Σ √I_pred·√I, S_bb = Σ I over valid pixels, frames
    [start, stop): what :func:`consistency_from_sums` needs (sums of disjoint ranges concatenate).

    The reader thread prepares each chunk's measured amplitudes while :func:`ptyfast.threads.get` workers share
    the chunk's exit waves and FFTs (each with one FFT worker: the gather and the element-wise work are
    single-threaded numpy, so splitting the frames, not the FFTs, keeps every core busy)."""
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


def consistency_sample(n_frames: int, limit: int = CONSISTENCY_FRAMES) -> np.ndarray:
    """Sorted indices of the frames the consistency figure is computed on: every frame when there are at most
    ``limit`` (or ``limit`` is 0), else ``limit`` evenly spaced ones (first and last included)."""
    if limit <= 0 or n_frames <= limit:
        return np.arange(n_frames)
    return np.unique(np.linspace(0, n_frames - 1, limit).round().astype(np.int64))


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


def data_consistency(scan: Scan, obj: np.ndarray, probe: np.ndarray, grid_pos: np.ndarray, *, fit: str = "none",
                     size=None, chunk: int = CHUNK, progress=None) -> Consistency:
    """Propagate the stitched object with the probe through the forward model and compare with the data.

    Per frame n the sums S_aa, S_ab, S_bb are kept (O(N) memory, :func:`consistency_sums`), so the global
    scale and the per-frame errors follow exactly (:func:`consistency_from_sums`).
    """
    return consistency_from_sums(consistency_sums(scan, obj, probe, grid_pos, fit=fit, size=size, chunk=chunk,
                                                  progress=progress))
