"""``reconstruct``: the main job as a library function (the CLI is a thin wrapper)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptyfast import __version__
from ptyfast.errors import InputError
from ptyfast.models.manifest import file_hash, probe_hash
from ptyfast.physics.probe import default_probe, paper_probe, scaled_to
from ptyfast.runtime.pipeline import (CHUNK, CONSISTENCY_FRAMES, Reconstruction, StitchPlan, check_far_field,
                                      consistency_sample, finish_reconstruction, plan_stitch, probe_similarity,
                                      stitch_frames)
from ptyfast.models.preprocess import fit_probe
from ptyfast.scan import Scan

PROBE_SIMILARITY_MIN = 0.9


PROBE_FILE = "probe.npy"  # the probe a model trained on measured data was trained for, beside its weights
REFINED_PROBE_FILE = "probe_refined.npy"  # its reference's refined probe (manifest refined_probe_sha256)


def model_probe(manifest, model_path=None) -> np.ndarray | None:
    """The probe a model was trained for, when ptyfast knows it: a bundled probe (default or paper), or the
    ``probe.npy`` that ``train --labels`` writes beside the weights (used only if its hash is the manifest's)."""
    candidates = [default_probe(), paper_probe()]
    if model_path is not None and (Path(model_path).parent / PROBE_FILE).is_file():
        candidates.append(np.load(Path(model_path).parent / PROBE_FILE))
    for p in candidates:
        if manifest.probe_sha256 and manifest.probe_sha256 == probe_hash(p):
            return np.asarray(p, np.complex64)
    return None


def refined_probe(manifest, model_path=None) -> np.ndarray | None:
    """The refined probe a model trained on measured data carries (``probe_refined.npy`` beside the weights,
    used only if its hash is the manifest's ``refined_probe_sha256``), else None."""
    path = None if model_path is None else Path(model_path).parent / REFINED_PROBE_FILE
    if not manifest.refined_probe_sha256 or path is None or not path.is_file():
        return None
    try:
        p = np.load(path)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"the model's refined probe {path} cannot be read ({exc}); restore it from the training "
                         "run or remove it to stitch with the scan's own probe.") from None
    return np.asarray(p, np.complex64) if probe_hash(p) == manifest.refined_probe_sha256 else None


def conditioned_probe(scan: Scan, manifest, *, fit: str, allow_mismatch: bool, model_path=None,
                      given: np.ndarray | None = None, given_name: str = "") -> tuple[np.ndarray, str, None]:
    """The probe a probe-conditioned model (manifest ``conditioning``) is given: ``given`` (``--probe``), else
    the scan's, else the model's reference probe. Any member of the model's probe family is accepted; a probe
    outside it (another window size, not confined, too small, NaN) is refused in one sentence."""
    from ptyfast.physics.probe_family import family_problem

    size = tuple(manifest.input_size)
    if given is not None:
        probe, note = given, f"the probe of {given_name}"
    elif scan.probe is not None:
        probe, note = scan.probe, "the scan's probe"
    else:
        known = model_probe(manifest, model_path)
        if known is None:
            raise InputError(f"'{manifest.architecture}' needs the scan's probe, and the scan holds none; give one "
                             "with --probe FILE (an .npy, or a ptyfast refine output of this scan).")
        return known, "the scan has no probe: using the model's reference probe", None
    probe = fit_probe(np.asarray(probe, np.complex64), size, fit) if fit != "none" else probe
    problem = family_problem(probe, size)
    if problem and not allow_mismatch:
        raise InputError(f"{note[0].upper() + note[1:]} is outside the probes '{manifest.architecture}' was trained "
                         f"for: {problem} (--allow-probe-mismatch runs anyway).")
    return np.asarray(probe, np.complex64), f"{note} (inside the model's probe family)", None


def choose_probe(scan: Scan, manifest, *, fit: str, allow_mismatch: bool, model_path=None,
                 given: np.ndarray | None = None, given_name: str = ""
                 ) -> tuple[np.ndarray | None, str, np.ndarray | None]:
    """(probe, note, weight probe): the probe of the consistency pass and of the result (what ``refine --init``
    starts from), a note on where it came from, and the probe whose |P|² weights the stitching when it is not
    that one (else None).

    Refuses a scan whose probe differs from the model's training probe (|⟨P_scan, P_model⟩| normalised
    below 0.9), because the network's mapping is probe-specific. A scan whose probe matches that of a model
    trained on measured data (``train --labels``) is checked and handed on with the model's refined probe,
    scaled to the scan's probe power — the scan's file usually holds the initial probe (on the Siemens star its
    far field sits 2.2 px off the data's; ε of the held-out half 0.156 with it) — and stitched with the |P|² of
    the probe the network was trained for, where its loss held it to the labels (weights from the refined probe
    measured +0.35 dB phase but −1.9 dB amplitude on the star: the network's outputs outside its training
    region are not reliable).
    """
    if getattr(manifest, "conditioning", ""):
        return conditioned_probe(scan, manifest, fit=fit, allow_mismatch=allow_mismatch, model_path=model_path,
                                 given=given, given_name=given_name)
    known = model_probe(manifest, model_path)
    size = tuple(manifest.input_size)
    own = given if given is not None else scan.probe
    if own is None:
        if known is not None:
            return known, "the scan has no probe: using the probe the model was trained for", None
        return None, "the scan has no probe and the model's probe is unknown: Hann-window weights, no consistency", None
    probe = fit_probe(own, size, fit)
    if known is not None:
        sim = probe_similarity(probe, known)
        if sim < PROBE_SIMILARITY_MIN and not allow_mismatch:
            raise InputError(
                f"the scan's probe differs from the probe '{manifest.architecture}' was trained for (similarity "
                f"{sim:.2f} < {PROBE_SIMILARITY_MIN}); fine-tune the model on this scan (ptyfast finetune) or pass "
                "--allow-probe-mismatch to reconstruct anyway."
            )
        refined = refined_probe(manifest, model_path) if sim >= PROBE_SIMILARITY_MIN else None
        if refined is not None:
            refined = scaled_to(refined, probe)
            return refined, (f"the refined probe of the model's reference reconstruction (the scan's own probe "
                             f"matches the model's, similarity {sim:.3f}, and weights the stitching)"), probe
        return probe, f"the scan's probe (similarity to the model's probe {sim:.3f})", None
    return probe, "the scan's probe", None


def default_model_for(probes: list[np.ndarray | None]) -> tuple[str, str]:
    """(model name, why) when the user names none, from the probes of the scans to reconstruct: the
    single-probe ``ptynet-s`` when every scan is under the bundled probe it was trained for (or has none), the
    probe-conditioned model as soon as one is under any other probe (it takes every probe, the bundled one too)."""
    from ptyfast.models.pretrained import DEFAULT_CONDITIONED_MODEL, DEFAULT_MODEL

    bundled = default_probe()
    sims = [probe_similarity(np.asarray(p, np.complex64), bundled) if np.shape(p) == bundled.shape else 0.0
            for p in probes if p is not None]
    if not sims:
        return DEFAULT_MODEL, f"model {DEFAULT_MODEL}: no probe is known"
    if min(sims) >= PROBE_SIMILARITY_MIN:
        return DEFAULT_MODEL, f"model {DEFAULT_MODEL}: the bundled probe it was trained for"
    return DEFAULT_CONDITIONED_MODEL, (f"model {DEFAULT_CONDITIONED_MODEL}: the probe is not the bundled one "
                                       f"(similarity {min(sims):.2f}), so the probe-conditioned network")


def scan_probes(paths, probe_file: str | None = None) -> list[np.ndarray | None]:
    """The probe each scan file would be reconstructed with (``--probe`` for all when given), read without its
    frames; a file that cannot be read yields None (its own error comes when it is reconstructed)."""
    if probe_file:
        from ptyfast.io.convert import load_probe

        return [load_probe(probe_file)]
    from ptyfast.io.convert import load_any

    out = []
    for path in paths:
        try:
            out.append(load_any(path).probe)
        except (InputError, OSError):
            out.append(None)
    return out


def _given_model_file(spec) -> Path | None:
    """The model file the user named (its folder may hold the training probe); a backend may run a cached
    ONNX conversion of it from elsewhere."""
    return Path(spec) if spec and Path(spec).is_file() else None


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


def check_frame_size(scan: Scan, manifest, fit: str) -> None:
    """Refuse frames of another size than the model's input unless ``fit`` says how to adapt them."""
    if scan.frame_shape != tuple(manifest.input_size) and fit == "none":
        h, w = scan.frame_shape
        th, tw = manifest.input_size
        raise InputError(
            f"the scan's patterns are {h}×{w} but the model expects {th}×{tw}; pass --fit crop (or --fit bin when "
            f"{h}/{th} is an integer, --fit pad when smaller), or fine-tune/train a model for {h}×{w} patterns."
        )


#: Share of a scan's photons in saturated (masked) pixels above which the network's result is refused:
#: measured on held-out scans (benchmarks/detector_quirks.py), 2 % cost 0.02 dB of phase, 29 % cost 4.4 dB.
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


def run_reconstruct(scan: Scan, job: ReconstructJob, *, backend=None, reason: str = "", progress=None,
                    client=None, source: tuple[str, str | None] | None = None) -> tuple[Reconstruction, dict]:
    """Reconstruct one scan; returns the reconstruction and its provenance record.

    With a Dask ``client`` the frames are spread over its workers, which reopen the scan from ``source``
    (absolute path, frame selection); see :mod:`ptyfast.runtime.distributed`."""
    from ptyfast.runtime.backends import open_backend

    t0 = time.perf_counter()
    own = backend is None
    if own:
        chosen = ""
        if job.model is None:
            model, chosen = default_model_for(scan_probes([], job.probe) if job.probe else [scan.probe])
            job = dataclasses.replace(job, model=model)
        backend, reason = open_backend(job.model, job.backend, job.device, job.precision, threads=job.threads,
                                       frames=scan.n_frames)
        reason = f"{chosen}; {reason}" if chosen else reason
        job = dataclasses.replace(job, precision=backend.precision)  # what auto chose (Dask workers open the same)
    t_load = time.perf_counter() - t0
    try:
        t_start = time.perf_counter()
        plan, probe_note = plan_for(scan, job, backend)
        if client is None:
            sample = (consistency_sample(scan.n_frames, job.consistency_frames)
                      if job.consistency and job.consistency_frames > 0 else None)
            part = stitch_frames(scan, backend, plan, batch=job.batch, chunk=job.chunk, spill=True,
                                 progress=progress, keep_measured=sample)
            rec = finish_reconstruction(scan, plan, part, consistency=job.consistency, chunk=job.chunk,
                                        progress=progress, t_start=t_start, release=True,
                                        offset_fitter=job.offset_fitter)
        else:
            from ptyfast.runtime.distributed import absolute_job, reconstruct_split

            rec = reconstruct_split(client, source, scan, plan, absolute_job(job), progress=progress)
    finally:
        if own:
            backend.close()
    rec.timings["load_model"] = t_load
    return rec, describe(rec, scan, job, backend, reason, plan, probe_note)


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


#: A result whose data consistency ε (:class:`ptyfast.runtime.pipeline.Consistency`) exceeds EPSILON_WARN, or
#: FLAT_RATIO_WARN × the ε of a flat object under the same probe, does not explain its data. Measured
#: (docs/benchmarks.md): network results on held-out scans 0.007 (flat 0.05, ratio 0.14); the real Siemens
#: star with a refined probe 0.023 (flat 0.059, ratio 0.39), with the file's initial-guess probe 0.165 (flat
#: 0.189, ratio 0.87); unmasked pinned pixels 0.9997.
EPSILON_WARN = 0.5
FLAT_RATIO_WARN = 0.7


def check_explains_data(rec, provenance: dict, *, strict: bool = False, name: str = "the scan") -> None:
    """Warn (recorded in ``provenance["warnings"]``) when the result's data consistency ε exceeds
    :data:`EPSILON_WARN` or :data:`FLAT_RATIO_WARN` times a flat object's, naming the likely causes; with
    ``strict`` raise :class:`ResultError` instead."""
    from ptyfast.errors import ResultError

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
    message = (f"{name}: the result does not explain its data ({why}); likely causes: a wrong probe (give "
               "--probe, e.g. from ptyfast refine of part "
               "of the scan), unmasked bad detector pixels, near-field data, or a wrong geometry (distance, pixel "
               "size, energy).")
    if strict:
        raise ResultError(message + " Nothing was written (--strict).")
    provenance.setdefault("warnings", []).append(message)
    provenance["explains_data"] = False


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
