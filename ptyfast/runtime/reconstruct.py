"""``reconstruct``: the job as a library function, :func:`run_reconstruct` (the CLI and the release check are thin
callers).

One scan — a :class:`~ptyfast.scan.Scan`, in memory or lazily on disk, or the path of a scan file — is checked
against the model (far field, saturation, frame size, probe: :mod:`ptyfast.models.probe_choice`), planned and
streamed through inference and stitching (:mod:`ptyfast.runtime.stitch`), blended, and judged by its data
consistency (:mod:`ptyfast.runtime.consistency`); with a Dask client its frames are spread over the workers
(:mod:`ptyfast.runtime.distributed`). The result is a :class:`Reconstruction` and its provenance record.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ptyfast import __version__
from ptyfast.errors import InputError
from ptyfast.models.manifest import file_hash
from ptyfast.models.probe_choice import (PROBE_FILE, PROBE_SIMILARITY_MIN, REFINED_PROBE_FILE, choose_probe,
                                         conditioned_probe, default_model_for, model_probe, refined_probe,
                                         scan_probes)
from ptyfast.runtime.consistency import (CONSISTENCY_FRAMES, Consistency, check_explains_data, consistency_sample,
                                         data_consistency, sampled_consistency)
from ptyfast.runtime.stitch import PartialStitch, StitchPlan, finish_stitch, plan_stitch, stitch_frames
from ptyfast.runtime.stream import CHUNK
from ptyfast.scan import Scan


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


@dataclass
class ReconstructJob:
    """Settings of one reconstruct run (the CLI's options)."""

    model: str | None = None
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"  # see open_backend: torch bf16 for long scans on AVX-512-BF16/AMX CPUs, else fp32
    batch: int | None = None  # None: the backend's default (32 on the CPU, 128 on a GPU)
    chunk: int = CHUNK
    fit: str = "none"
    weighting: str = "probe"
    align_phase: bool | None = None
    consistency: bool = True
    consistency_frames: int = CONSISTENCY_FRAMES  # frames of the consistency figure (0: all, read again at the end)
    allow_probe_mismatch: bool = False
    threads: int | None = None
    offset_fitter: object = None  # callable(scan, plan, patches, z) → (z, note) refining the offsets (--fit-offsets)
    probe: str | None = None  # --probe FILE: the probe to use instead of the scan's (.npy or a ptyfast output)
    auto_mask: bool = True  # mask detector pixels that hold no photon counts (ptyfast.io.pixels)
    strict: bool = False  # a result that cannot explain its data (ε > EPSILON_WARN) is an error, not a warning


# -- checks of a scan against the model ------------------------------------------------------------------------


def check_far_field(scan: Scan) -> None:
    """Refuse near-field data (checked before anything about frame sizes: no --fit makes it usable)."""
    if scan.near_field:
        reason = scan.meta.get("near_field_reason", "")
        raise InputError(
            f"{scan.meta.get('source', 'the scan')} holds near-field (holographic) data{f' ({reason})' if reason else ''}; "
            "ptyfast's networks reconstruct far-field ptychography only."
        )


def check_frame_size(scan: Scan, manifest, fit: str) -> None:
    """Refuse frames of another size than the model's input unless ``fit`` says how to adapt them."""
    if scan.frame_shape != tuple(manifest.input_size) and fit == "none":
        h, w = scan.frame_shape
        th, tw = manifest.input_size
        raise InputError(
            f"the scan's patterns are {h}×{w} but the model expects {th}×{tw}; pass --fit crop (or --fit bin when "
            f"{h}/{th} is an integer, --fit pad when smaller), or fine-tune/train a model for {h}×{w} patterns."
        )


#: Share of a scan's photons in saturated (masked) pixels above which the network's result is refused: the
#: network sees those pixels filled from their neighbours, and the phase it then predicts degrades quickly with
#: the share (benchmarks/detector_quirks.py; figures in docs/benchmarks.md).
SATURATION_REFUSE_SHARE = 0.05


def check_saturation(scan: Scan) -> None:
    """Refuse a scan whose saturated pixels (masked on read, :mod:`ptyfast.io.pixels`) hold so much of the
    signal that the network, which sees them filled from their neighbours, cannot be trusted."""
    found = scan.meta.get("auto_mask") or {}
    share = float(found.get("saturated_share") or 0.0)
    if share > SATURATION_REFUSE_SHARE:
        raise InputError(
            f"{scan.meta.get('source', 'the scan')}: {found['reasons'].get('saturated', 0)} detector pixels saturate "
            f"at {found.get('saturation_counts', 0):g} counts and hold {share:.0%} of the measured photons (more than "
            f"{SATURATION_REFUSE_SHARE:.0%}: the bright centre of the patterns is clipped); measure with an attenuator "
            "or a beam stop, or refine with ptyfast refine, which ignores the masked pixels.")


def _given_model_file(spec) -> Path | None:
    """The model file the user named (its folder may hold the training probe); a backend may run a cached
    ONNX conversion of it from elsewhere."""
    return Path(spec) if spec and Path(spec).is_file() else None


def plan_for(scan: Scan, job: ReconstructJob, backend) -> tuple[StitchPlan, str]:
    """Check the scan against the model (far field, frame size, probe) and plan its stitching; returns the
    plan and a note on where the probe came from."""
    manifest = backend.manifest
    check_far_field(scan)
    check_saturation(scan)
    check_frame_size(scan, manifest, job.fit)
    given = None
    if job.probe:
        from ptyfast.io.convert import load_probe

        given = load_probe(job.probe)
    probe, probe_note, weight_probe = choose_probe(scan, manifest, fit=job.fit,
                                                   allow_mismatch=job.allow_probe_mismatch,
                                                   model_path=_given_model_file(job.model) or backend.model_path,
                                                   given=given, given_name=Path(job.probe).name if job.probe else "")
    align = job.align_phase if job.align_phase is not None else manifest.phase_offsets == "free"
    plan = plan_stitch(scan.positions, scan.frame_shape[0], manifest, probe, fit=job.fit, weighting=job.weighting,
                       align_phase=align, mask=scan.mask, weight_probe=weight_probe)
    return plan, probe_note


# -- the entry point -------------------------------------------------------------------------------------------


def run_reconstruct(scan: Scan | str | Path, job: ReconstructJob, *, backend=None, reason: str = "",
                    progress=None, client=None, source: tuple[str, str | None] | None = None
                    ) -> tuple[Reconstruction, dict]:
    """Reconstruct one scan; returns the reconstruction and its provenance record.

    ``scan`` is a :class:`~ptyfast.scan.Scan` (in memory, or lazy on disk: its frames are streamed) or the path
    of a scan file (opened with ``job.auto_mask`` and closed again). ``backend`` is an opened backend to use
    (and leave open), with the ``reason`` it was chosen; without one the job's model is opened (the default
    model for the scan's probe when it names none) and closed at the end. ``progress(done, total, stage)``
    follows the work. With a Dask ``client`` the frames are spread over its workers, which reopen the scan from
    ``source`` (absolute path, frame selection); see :mod:`ptyfast.runtime.distributed`."""
    if isinstance(scan, Scan):
        return _reconstruct(scan, job, backend, reason, progress, client, source)
    from ptyfast.io.convert import load_any

    path = Path(scan)
    with load_any(path, validate=False, auto_mask=job.auto_mask) as opened:  # frames checked chunk by chunk
        return _reconstruct(opened, job, backend, reason, progress, client, source or (str(path.resolve()), None))


def _open_for(scan: Scan, job: ReconstructJob) -> tuple[object, str, ReconstructJob]:
    """(backend, why, job) for a job that brought no backend: its model (or the default one for the scan's
    probe), with the precision ``auto`` chose recorded in the job (Dask workers open the same)."""
    from ptyfast.runtime.backends import open_backend

    chosen = ""
    if job.model is None:
        model, chosen = default_model_for(scan_probes([], job.probe) if job.probe else [scan.probe])
        job = dataclasses.replace(job, model=model)
    backend, reason = open_backend(job.model, job.backend, job.device, job.precision, threads=job.threads,
                                   frames=scan.n_frames)
    reason = f"{chosen}; {reason}" if chosen else reason
    return backend, reason, dataclasses.replace(job, precision=backend.precision)


def _reconstruct(scan: Scan, job: ReconstructJob, backend, reason: str, progress, client, source
                 ) -> tuple[Reconstruction, dict]:
    t0 = time.perf_counter()
    own = backend is None
    if own:
        backend, reason, job = _open_for(scan, job)
    t_load = time.perf_counter() - t0
    try:
        t_start = time.perf_counter()
        plan, probe_note = plan_for(scan, job, backend)
        if client is None:
            rec = _stitch_and_finish(scan, backend, plan, batch=job.batch, chunk=job.chunk,
                                     consistency=job.consistency, consistency_frames=job.consistency_frames,
                                     progress=progress, t_start=t_start, offset_fitter=job.offset_fitter)
        else:
            from ptyfast.runtime.distributed import absolute_job, reconstruct_split

            rec = reconstruct_split(client, source, scan, plan, absolute_job(job), progress=progress)
    finally:
        if own:
            backend.close()
    rec.timings["load_model"] = t_load
    return rec, describe(rec, scan, job, backend, reason, plan, probe_note)


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
    """The stitching of :func:`run_reconstruct` without the job around it: no model checks besides the far
    field, no probe choice (``probe`` or the scan's is used as given), no provenance. For code that holds its
    own network as a backend and its own probe — fine-tuning's validation, which must stitch exactly as
    ``reconstruct`` does, and tests of the stitching itself.

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
        Compute the forward-model consistency figure (needs a probe), on
        :func:`~ptyfast.runtime.consistency.consistency_sample`'s frames.
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
    return _stitch_and_finish(scan, backend, plan, batch=batch, chunk=chunk, consistency=consistency,
                              consistency_frames=CONSISTENCY_FRAMES, progress=progress, t_start=t_start,
                              offset_fitter=offset_fitter)


def _stitch_and_finish(scan: Scan, backend, plan: StitchPlan, *, batch, chunk: int, consistency: bool,
                       consistency_frames: int, progress, t_start: float, offset_fitter) -> Reconstruction:
    """Every frame streamed through ``backend`` and stitched in this process, keeping the measured amplitudes
    of the consistency sample; then :func:`finish_reconstruction`."""
    sample = (consistency_sample(scan.n_frames, consistency_frames)
              if consistency and consistency_frames > 0 else None)
    on_device = device_stitching(backend, plan, scan.n_frames)
    backend.device_outputs = on_device
    try:
        part = stitch_frames(scan, backend, plan, batch=batch, chunk=chunk, spill=not on_device, progress=progress,
                             keep_measured=sample)
    finally:
        backend.device_outputs = False
    rec = finish_reconstruction(scan, plan, part, consistency=consistency, chunk=chunk, progress=progress,
                                t_start=t_start, release=True, offset_fitter=offset_fitter)
    if getattr(backend, "memory_note", None):
        rec.notes.append(backend.memory_note)
    return rec


#: Share of the device's free memory the kept patches and the object grid may take when stitching there.
DEVICE_STITCH_MEMORY = 0.5


def device_stitching(backend, plan: StitchPlan, n_frames: int) -> bool:
    """Whether to stitch on the GPU: a CUDA backend that can hand its outputs over on the device (torch), CuPy,
    and the kept patches (n_frames × the lit box, complex64) plus the object grid (complex64 + float32) within
    :data:`DEVICE_STITCH_MEMORY` of the device's free memory; else the host stitches, spilling patches to disk
    beyond its memory budget."""
    if getattr(backend, "device", "cpu") != "cuda" or not getattr(backend, "supports_device_outputs", False):
        return False
    try:
        import cupy

        free, _ = cupy.cuda.runtime.memGetInfo()
    except Exception:  # noqa: BLE001 - no CuPy, or no device it can use: stitch on the host
        return False
    box = plan.weight[plan.box]
    need = n_frames * box.size * 8 + int(np.prod(plan.shape)) * 12
    return need <= DEVICE_STITCH_MEMORY * free


def finish_reconstruction(scan: Scan, plan: StitchPlan, part: PartialStitch, *, consistency: bool = True,
                          chunk: int = CHUNK, progress=None, t_start: float | None = None,
                          consistency_fn=None, release: bool = False, offset_fitter=None) -> Reconstruction:
    """The :class:`Reconstruction` from the partial of all frames: blend, then (with a probe) the consistency
    pass — on the sample whose measured amplitudes the partial kept, else computed by ``consistency_fn(obj)``
    when given (e.g. spread over a cluster), else over every frame of the file. ``release`` drops the partial's
    sums or kept patches once blended (the caller is done with it), so they are not held through the consistency
    pass and the output."""
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
            rec.consistency = sampled_consistency(obj, plan.probe, plan.grid_pos, *kept, plan.mask, scan.n_frames)
        else:
            rec.consistency = data_consistency(scan, obj, plan.probe, plan.grid_pos, fit=plan.fit, size=plan.size,
                                               chunk=chunk, progress=progress)
        timings["consistency"] = time.perf_counter() - t
    timings["wall"] = time.perf_counter() - t_start
    return rec


# -- the record of a result ------------------------------------------------------------------------------------


def describe(rec: Reconstruction, scan: Scan, job: ReconstructJob, backend, reason: str, plan: StitchPlan,
             probe_note: str) -> dict:
    """The provenance record of a reconstruction (also set as ``rec.provenance``); raises on a result that
    cannot be right and lists warnings for a suspicious one (:func:`result_warnings`)."""
    manifest = backend.manifest
    model_file = backend.model_path
    provenance = {
        "ptyfast_version": __version__,
        "input": str(scan.meta.get("source", "")),
        "frames": scan.n_frames,
        "frame_shape": list(scan.frame_shape),
        "backend": backend.describe(),
        "backend_reason": reason,
        "model_manifest": manifest.to_json(),
        "model_sha256": file_hash(model_file) if model_file and Path(model_file).is_file() else "",
        "probe_source": probe_note,
        "object_pixel_size_m": scan.object_pixel_size(int(manifest.input_size[0]), job.fit),
        "options": {**{k: v for k, v in job.__dict__.items() if k != "offset_fitter"}, "align_phase": plan.align,
                    "fit_offsets": job.offset_fitter is not None and plan.align},
        "timings_s": {k: round(v, 4) for k, v in rec.timings.items()},
        "patterns_per_s": scan.n_frames / max(rec.timings["wall"], 1e-9),
        "detector_mask": {"given": scan.mask is not None, **(scan.meta.get("auto_mask") or {})},
    }
    for key in ("auto_mask_note", "probe_modes_note"):
        if scan.meta.get(key):
            provenance[key] = scan.meta[key]
    provenance["warnings"] = list(rec.notes) + result_warnings(rec, manifest.architecture)
    rec.provenance = provenance
    return provenance


def result_warnings(rec: Reconstruction, model: str) -> list[str]:
    """Refuse an object that cannot be right, and name one that is suspicious.

    Non-finite values on the covered pixels raise :class:`InputError` (nothing is written). An object whose
    amplitude and phase are constant there (relative amplitude spread and phase spread both below 10⁻³) is
    what a collapsed network produces: returned as a warning for the CLI to print. The phase spread is the
    circular one, √(−2 ln R) with R = |Σ O| / Σ |O| (amplitude-weighted; the standard deviation for small
    spreads): a flat phase near ±π, which wraps between the two, is flat too."""
    covered = rec.covered(0.1)
    if not covered.any():
        covered = np.ones(covered.shape, bool)
    bad, n = 0, 0
    amp_sum = amp_sq = 0.0
    field = 0j  # Σ|O|, Σ|O|², ΣO over covered pixels, by rows: no object-sized copies
    for r in range(0, covered.shape[0], 256):
        values = rec.object[r : r + 256][covered[r : r + 256]]
        bad += int(values.size - np.count_nonzero(np.isfinite(values)))
        amp = np.abs(values)
        n += values.size
        amp_sum += float(np.sum(amp, dtype=np.float64))
        amp_sq += float(np.sum(np.square(amp, dtype=np.float64)))
        field += complex(np.sum(values, dtype=np.complex128))
    if bad:
        raise InputError(f"'{model}' produced NaN or Inf for this scan ({bad} covered pixels); nothing was "
                         "written; check the model file and the scan's counts.")
    mean_amp = amp_sum / n
    std_amp = float(np.sqrt(max(amp_sq / n - mean_amp**2, 0.0)))
    resultant = min(abs(field) / amp_sum, 1.0) if amp_sum > 0 else 1.0
    std_pha = float(np.sqrt(max(0.0, -2.0 * np.log(resultant)))) if resultant > 0 else float("inf")  # 0, not -0
    if std_amp < 1e-3 * max(mean_amp, 1e-12) and std_pha < 1e-3:
        return [f"the object is flat: '{model}' predicted the same patch for every pattern (amplitude spread "
                f"{std_amp:.2g}, phase spread {std_pha:.2g} rad); the model has collapsed or does not fit "
                "these data, so this reconstruction carries no information about the sample."]
    return []


__all__ = ["Reconstruction", "ReconstructJob", "run_reconstruct", "reconstruct_scan", "finish_reconstruction",
           "plan_for", "describe", "result_warnings", "check_far_field", "check_frame_size", "check_saturation",
           "SATURATION_REFUSE_SHARE",
           # the probe choice (ptyfast.models.probe_choice) and the result's check (ptyfast.runtime.consistency),
           # also importable from here, where the reconstruct job's callers look for them
           "PROBE_FILE", "PROBE_SIMILARITY_MIN", "REFINED_PROBE_FILE", "choose_probe", "conditioned_probe",
           "default_model_for", "model_probe", "refined_probe", "scan_probes", "check_explains_data"]
