"""Stitching: the plan of a scan's object grid and weights, the patches of a frame range inferred and blended
into a :class:`PartialStitch`, partials combined, and the blend finished into an object.

Each predicted patch A·exp(iφ) is placed at its true sub-pixel position (bilinear, :func:`ptyfast.kernels.
overlap_add`) and blended with weights w = |P|² (the probe intensity: pixels the probe barely lit carry little
information), O = Σ w·patch / Σ w. ``weighting="uniform"`` reproduces the seed paper's stitching (w = 1 at
integer-rounded positions) for comparison. ``align_phase`` solves every patch's phase offset from the overlaps
(:mod:`ptyfast.runtime.phase_align`; one pattern cannot determine it) before blending: the patches are then
kept, cropped to where the weight is ≥ 1 % of its maximum (63 kB per frame for the default probe), and blended
once all are predicted. In one process they wait in a :class:`~ptyfast.runtime.spilled_patches.SpilledPatches`
(overlap products taken as frames arrive; patches in memory up to 128 MiB, then in an unlinked temporary file);
partials of several workers keep them in memory.

:func:`stitch_frames` runs the stages of :mod:`ptyfast.runtime.stream` side by side: a reader thread (read,
validate, preprocess), inference from the calling thread (:meth:`~ptyfast.runtime.backends.Backend.map`: on the
CPU several batches side by side) and a stitching thread (frame order). Peak memory is O(chunk · H · W) for the
data plus O(object area) for the object and its weight map, independent of the number of frames.

The stitching runs on the array module of the batch outputs (``xp``, :func:`ptyfast.physics.xp.get_array_module`):
numpy arrays on the host, CuPy arrays (or torch CUDA tensors, taken through DLPack) on their device, where the
kept patches, the grid sums, the overlap products, the blend and the normalisation then stay; only the overlap
products (for the host's eigen-solve) and, from :func:`finish_stitch`, the object and its weight map come back.
Spilled patches stay on the host (see :meth:`_BatchStitcher._spill`).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

import numpy as np

from ptyfast.choices import Fit, Weighting
from ptyfast.kernels import asnumpy, normalise, overlap_add
from ptyfast.models.preprocess import fit_frames, fit_probe, model_grid, preprocess
from ptyfast.physics.probe import lit_pixels
from ptyfast.physics.xp import get_array_module
from ptyfast.runtime.consistency import measured_amplitudes
from ptyfast.runtime.phase_align import offsets_from_overlaps, solve_phase_offsets, support_box
from ptyfast.runtime.spilled_patches import SpilledPatches
from ptyfast.runtime.stream import CHUNK, BackgroundStage, stream_frames
from ptyfast.scan import Scan


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
        where the ``lit`` loss held the network to its labels), 0 elsewhere: outside them the network's phase is
        not held to anything, so it should not vote on the offsets (the comparison with |P|² weights is in
        docs/benchmarks.md)."""
        return lit_pixels(self.box_weight).astype(np.float32)

    @property
    def probe_power(self) -> float | None:
        return float(np.sum(np.abs(self.probe) ** 2)) if self.probe is not None else None


def plan_stitch(positions: np.ndarray, frame_size: int, manifest, probe: np.ndarray | None, *, fit: str = "none",
                weighting: str = "probe", align_phase: bool | None = None, mask: np.ndarray | None = None,
                weight_probe: np.ndarray | None = None) -> StitchPlan:
    """The :class:`StitchPlan` of a scan (see :func:`ptyfast.runtime.reconstruct.reconstruct_scan` for the
    options); ``weight_probe``, when given, sets the |P|² stitching weights instead of ``probe`` (which the
    consistency pass uses)."""
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


def _window(size: tuple[int, int]) -> np.ndarray:
    """Separable Hann window, the documented fallback weight when no probe is known."""
    return np.outer(np.hanning(size[0] + 2)[1:-1], np.hanning(size[1] + 2)[1:-1]).astype(np.float32)


@dataclass
class PartialStitch:
    """The stitching of frames [start, stop).

    Blending is linear, so partials of disjoint frame ranges add up: ``num`` = Σ w·patch and ``wsum`` = Σ w on
    the plan's object grid. When the phase offsets are to be solved (or the caller asks to keep them) the
    patches themselves are kept instead (cropped to the plan's box), since the offsets depend on all of them:
    in memory (``patches``, which partials of several workers can combine), or, in one process, with their
    overlap products taken as they arrive and the patches beyond a memory budget spilled to a temporary file
    (``spilled``: memory that does not grow with the frames; ``num`` and ``wsum`` then hold the zeroed grid and
    the weight map, summed while stitching). ``num``, ``wsum`` and ``patches`` are arrays of the batch outputs'
    module (numpy, or CuPy on a device); spilled patches and their grid are numpy."""

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


def complex_patches(amp, pha, out=None):
    """A·exp(iφ) as complex64 (same shape, e.g. (B, h, w)), computed in float32 (``np.exp(1j * φ)`` would go
    through complex128), into ``out`` when given; on the array module of ``amp`` (numpy or CuPy)."""
    xp = get_array_module(amp)
    out = xp.empty(amp.shape, xp.complex64) if out is None else out
    xp.multiply(amp, xp.cos(pha, dtype=xp.float32), out=out.real)
    xp.multiply(amp, xp.sin(pha, dtype=xp.float32), out=out.imag)
    return out


def as_array(a):
    """A batch output as a numpy or CuPy array: torch tensors are shared through DLPack (CPU → numpy, CUDA →
    CuPy; no copy), anything else is returned as it is."""
    if type(a).__module__.startswith("torch"):
        from ptyfast.kernels.memory import from_torch

        return from_torch(a)
    return a


def _on(xp, a):
    """``a`` as an array of ``xp`` (copied between host and device only when it is not one already)."""
    if get_array_module(a) is xp:
        return a
    return asnumpy(a) if xp is np else xp.asarray(a)


class _BatchStitcher:
    """Adds one batch's outputs to a :class:`PartialStitch`, in the stitching stage's thread: summed on the grid,
    kept in place (``keep``), or kept with their overlap products and spilled (``spilling``)."""

    def __init__(self, plan: StitchPlan, part: PartialStitch, keep: bool, spilling: bool) -> None:
        self.plan, self.part, self.keep, self.spilling = plan, part, keep, spilling
        self._weight = None  # plan.weight on the store's array module

    def store(self, xp) -> None:
        """Allocate the kept-patch store or the grid sums on ``xp`` (the first batch's module) if not yet done."""
        plan, part = self.plan, self.part
        if self.spilling:
            return
        if self.keep and part.patches is None:  # filled in place: no list of batches to concatenate
            part.patches = xp.empty((part.stop - part.start, *plan.weight[plan.box].shape), xp.complex64)
        elif not self.keep and part.num is None:
            part.num = xp.zeros(plan.shape, xp.complex64)
            part.wsum = xp.zeros(plan.shape, xp.float32)
        if not self.keep and self._weight is None:
            self._weight = _on(get_array_module(part.num), plan.weight)

    def setup(self) -> None:
        """Find the overlapping pairs of the spilled patches: this takes a while, so it runs in the stitching
        thread while the first chunk is read and inferred."""
        t = time.perf_counter()
        plan, part = self.plan, self.part
        part.spilled = SpilledPatches(plan.grid_pos[part.start : part.stop] + plan.box_offset, plan.solve_weight)
        part.timings["stitch"] += time.perf_counter() - t

    def __call__(self, first: int, amp, pha) -> None:
        """Stitch the (B, H, W) float32 amplitude and phase (radians) of frames [first, first + B)."""
        t = time.perf_counter()
        plan, part = self.plan, self.part
        amp, pha = as_array(amp), as_array(pha)
        if self.spilling:
            self._spill(first, amp, pha)
        else:
            self.store(get_array_module(amp))
            xp = get_array_module(part.patches if self.keep else part.num)
            amp, pha = _on(xp, amp), _on(xp, pha)
            if self.keep:
                complex_patches(amp[:, plan.box[0], plan.box[1]], pha[:, plan.box[0], plan.box[1]],
                                out=part.patches[first - part.start : first - part.start + len(amp)])
            else:
                patches = complex_patches(amp, pha)
                overlap_add(part.num, patches, plan.grid_pos[first : first + len(patches)], weights=self._weight,
                            weight_accum=part.wsum)
        part.timings["stitch"] += time.perf_counter() - t

    def _spill(self, first: int, amp, pha) -> None:
        """Host only: a device batch's complex patches are built on the device and their box copied to the host
        once per batch."""
        plan, part = self.plan, self.part
        if part.num is None:  # in this thread, beside inference: the grid's pages are touched here, not after
            part.num = np.zeros(plan.shape, np.complex64)
            part.num.fill(0)
            part.wsum = np.zeros(plan.shape, np.float32)
        # only the box is kept: the complex patches are built there alone
        part.spilled.add(asnumpy(complex_patches(amp[:, plan.box[0], plan.box[1]], pha[:, plan.box[0], plan.box[1]])))
        box_w = plan.box_weight
        # the weight map does not depend on the offsets: summed now, so the blend only adds the patches
        overlap_add(part.wsum, np.broadcast_to(box_w, (len(amp), *box_w.shape)),
                    plan.grid_pos[first : first + len(amp)] + plan.box_offset)


def _preparer(plan: StitchPlan, part: PartialStitch, manifest):
    """``prepare(frames)`` for the reader thread: fit the frames to the model, keep the measured amplitudes of
    the chunk's frames of the consistency sample (``part.measured_frames``), preprocess."""
    fft_mask = None if plan.mask is None else np.fft.ifftshift(plan.mask)
    cursor = [part.start]

    def prepare(frames: np.ndarray) -> np.ndarray:
        fitted = fit_frames(frames, plan.size, plan.fit)
        if part.measured is not None:
            first = cursor[0]
            lo, hi = np.searchsorted(part.measured_frames, [first, first + len(frames)])
            if hi > lo:
                part.measured[lo:hi] = measured_amplitudes(fitted[part.measured_frames[lo:hi] - first], fft_mask)
            cursor[0] = first + len(frames)
        return preprocess(fitted, manifest, probe_power=plan.probe_power, mask=plan.mask, probe=plan.probe)

    return prepare


def stitch_frames(scan: Scan, backend, plan: StitchPlan, start: int = 0, stop: int | None = None, *,
                  batch: int | None = None, chunk: int = CHUNK, keep_patches: bool | None = None, spill: bool = False,
                  progress=None, keep_measured: np.ndarray | None = None) -> PartialStitch:
    """Read, preprocess and infer frames [start, stop) of ``scan`` and stitch them (see :class:`PartialStitch`);
    kept patches are spilled (:mod:`ptyfast.runtime.spilled_patches`) when ``spill``. The measured amplitudes
    of the frames ``keep_measured`` (sorted indices in [start, stop)) are kept for the consistency figure.
    The kept patches or grid sums are allocated at the first batch on its array module (CuPy for device
    outputs, numpy otherwise); spilled patches stay on the host, each device batch copied back once.

    Reading and stitching run in background threads beside inference (see the module docstring);
    ``timings`` holds each stage's own busy time, so their sum may exceed the wall time."""
    stop = scan.n_frames if stop is None else stop
    batch = backend.default_batch if batch is None else batch
    chunk = max(chunk, batch)  # a batch never spans two reads: a read as large as the batch asked for
    keep = plan.align if keep_patches is None else keep_patches
    part = PartialStitch(start, stop, timings={"read": 0.0, "preprocess": 0.0, "infer": 0.0, "stitch": 0.0})
    spilling = keep and spill
    if keep_measured is not None and plan.probe is not None:
        part.measured_frames = np.asarray(keep_measured, np.int64)
        part.measured = np.empty((len(part.measured_frames), *plan.size), np.float32)
    prepare = _preparer(plan, part, backend.manifest)
    stitcher = _BatchStitcher(plan, part, keep, spilling)
    stage = BackgroundStage(stitcher, setup=stitcher.setup if spilling else None)
    firsts: collections.deque = collections.deque()  # the first frame of each batch handed to the backend

    def batches():
        for s, x in stream_frames(scan, chunk, start=start, stop=stop, stats=part.timings, transform=prepare):
            for b in range(0, len(x), batch):
                firsts.append(s + b)
                yield x[b : b + batch]

    outputs = None
    try:
        outputs = backend.map(batches())  # several batches side by side on the CPU (Backend.map)
        while True:
            t = time.perf_counter()
            try:
                amp, pha = next(outputs)
            except StopIteration:
                break
            part.timings["infer"] += time.perf_counter() - t  # waiting for inference (and the reader, when behind)
            first = firsts.popleft()
            stage.put(first, amp, pha)
            if progress is not None:
                progress(first + len(amp) - start, stop - start, "stitch")
    finally:
        if outputs is not None:  # on an error: stop the batches still running and the reader now, not at GC
            outputs.close()
        stage.close()
    stitcher.store(np)  # no frames: an empty store on the host
    return part


def combine_partials(parts: list[PartialStitch]) -> PartialStitch:
    """One partial from partials of adjacent frame ranges (sums added; kept patches concatenated in frame
    order; timings added), on the array module of the first partial's arrays."""
    parts = sorted(parts, key=lambda p: p.start)
    for a, b in zip(parts, parts[1:]):
        if a.stop != b.start:
            raise ValueError(f"partials [{a.start}, {a.stop}) and [{b.start}, {b.stop}) are not adjacent")
    out = PartialStitch(parts[0].start, parts[-1].stop)
    if all(p.patches is not None for p in parts):
        xp = get_array_module(parts[0].patches)
        out.patches = xp.concatenate([_on(xp, p.patches) for p in parts])
    elif all(p.num is not None for p in parts):
        xp = get_array_module(parts[0].num)
        out.num = xp.sum(xp.stack([_on(xp, p.num) for p in parts]), axis=0) if len(parts) > 1 else parts[0].num
        out.wsum = xp.sum(xp.stack([_on(xp, p.wsum) for p in parts]), axis=0) if len(parts) > 1 else parts[0].wsum
    else:
        raise ValueError("cannot combine partials that keep patches with partials that keep sums")
    for p in parts:
        for k, v in p.timings.items():
            out.timings[k] = out.timings.get(k, 0.0) + v
    return out


BLEND_CHUNK = 1024  # patches read back from the spill file at a time for the blend
ROTATE = 64  # patches rotated by their phase offsets at a time (4 MiB for the default probe's 89² box)


def finish_stitch(plan: StitchPlan, part: PartialStitch, fit=None, notes: list | None = None, *,
                  to_host: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """(object, weight map, timings) from the partial of all frames: solve the phase offsets when the plan
    says so, blend kept patches, normalise — on the partial's array module (numpy, or CuPy: then only the
    overlap products come to the host for the offset solve, and the object (rows, cols) complex64 and weight
    map float32 at the end, unless ``to_host`` is False). With ``fit(patches, z) → (z, note)`` the solved
    offsets are then refined (e.g. against the data, :mod:`ptyfast.runtime.offset_fit`, on the host: device
    patches are copied back for it; a note is appended to ``notes``) and the object takes its phase from the
    blend with the fitted offsets and its amplitude from the blend with the solved ones (the fit's model:
    offsets move phase, never amplitude)."""
    timings: dict = {}
    t = time.perf_counter()
    back = asnumpy if to_host else (lambda a: a)
    if part.patches is None and part.spilled is None:
        obj = normalise(part.num, part.wsum, out=part.num)
        timings["stitch"] = time.perf_counter() - t
        return back(obj), back(part.wsum), timings
    xp = np if part.spilled is not None else get_array_module(part.patches)
    pos = plan.grid_pos[part.start : part.stop] + plan.box_offset
    z = np.ones(len(pos), np.complex64)
    solved = None
    if plan.align and len(pos):
        z = offsets_from_overlaps(part.spilled.matrix()) if part.spilled is not None else \
            solve_phase_offsets(part.patches, pos, plan.solve_weight)
        timings["align"] = time.perf_counter() - t
        if fit is not None:
            t_fit = time.perf_counter()
            kept = asnumpy(part.patches) if part.spilled is None else np.concatenate(
                [c for _, c in part.spilled.chunks(BLEND_CHUNK)])
            solved, (z, note) = z, fit(kept, z)
            del kept
            if note and notes is not None:
                notes.append(note)
            timings["fit_offsets"] = time.perf_counter() - t_fit
    if part.spilled is not None and part.num is not None:  # the weight map was summed while stitching
        num, wsum, wacc = part.num, part.wsum, None
    else:
        num = xp.zeros(plan.shape, xp.complex64)
        wsum = wacc = xp.zeros(plan.shape, xp.float32)
    _blend(plan, part, pos, z, num, wacc)
    obj = normalise(num, wsum, out=num)  # in place: no second object-sized array
    if solved is not None and solved is not z:
        amplitude = xp.abs(normalise(_blend(plan, part, pos, solved, xp.zeros(plan.shape, xp.complex64)), wsum))
        mag = xp.abs(obj)
        lit = mag > 0
        xp.multiply(obj, xp.where(lit, amplitude / xp.where(lit, mag, xp.float32(1)), xp.float32(0)), out=obj)
    timings["stitch"] = time.perf_counter() - t
    return back(obj), back(wsum), timings


def _blend(plan: StitchPlan, part: PartialStitch, pos: np.ndarray, z: np.ndarray, num, wacc=None):
    """``num`` += Σ_k z_k w·p_k over the kept patches (and ``wacc`` += Σ w), on ``num``'s array module: rotated
    ``ROTATE`` at a time into one reused buffer on the host (no second copy of every patch, no fresh memory per
    chunk), ``BLEND_CHUNK`` at a time on a device (one kernel launch each). ``pos`` (N, 2) and ``z`` (N,)
    are host arrays."""
    xp = get_array_module(num)
    step = ROTATE if xp is np else BLEND_CHUNK
    z, weight = _on(xp, z), _on(xp, plan.box_weight)
    chunks = part.spilled.chunks(BLEND_CHUNK) if part.spilled is not None else \
        ((s, part.patches[s : s + BLEND_CHUNK]) for s in range(0, len(pos), BLEND_CHUNK))
    rotated = None
    for s, patches in chunks:
        for a in range(0, len(patches), step):
            b = min(a + step, len(patches))
            rotated = xp.empty((step, *patches.shape[1:]), xp.complex64) if rotated is None else rotated
            out = xp.multiply(patches[a:b], z[s + a : s + b, None, None], out=rotated[: b - a])
            overlap_add(num, out, pos[s + a : s + b], weights=weight, weight_accum=wacc)
    return num
