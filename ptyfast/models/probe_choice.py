"""The probe a model is run with, and the model a scan's probe calls for.

A network's mapping from patterns to patches holds for the probe it was trained under (a probe-conditioned
model: for its family of probes), so a scan's probe is checked against the model's before anything is stitched.
ptyfast knows a model's probe by the hash its manifest records: a bundled probe (default or paper), or the
``probe.npy`` that ``train --labels`` writes beside the weights. The reconstruct job
(:mod:`ptyfast.runtime.reconstruct`), the backends' bf16 check and the release check all ask here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptyfast.errors import InputError, PtyfastError
from ptyfast.models.manifest import probe_hash
from ptyfast.models.preprocess import fit_probe
from ptyfast.physics.probe import default_probe, paper_probe, scaled_to
from ptyfast.scan import Scan

#: Smallest similarity (:func:`probe_similarity`) between a scan's probe and the model's that counts as the same
#: probe; below it the network's mapping does not hold and the scan is refused.
PROBE_SIMILARITY_MIN = 0.9

PROBE_FILE = "probe.npy"  # the probe a model trained on measured data was trained for, beside its weights
REFINED_PROBE_FILE = "probe_refined.npy"  # its reference's refined probe (manifest refined_probe_sha256)


def probe_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """|⟨a, b⟩| / (‖a‖‖b‖): 1 for the same probe up to scale and global phase, ~0 for unrelated probes."""
    num = abs(np.vdot(a.ravel(), b.ravel()))
    return float(num / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


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


#: Range of a probe's power Σ|P|² over the data's mean photons per frame taken to be in ptyfast's convention
#: (``refine``'s: Σ|P|² = the photons a frame would hold behind an empty object, with the ortho forward model).
#: A passive sample cannot send more photons to the detector than the probe brings (ratio ≥ 1, less a margin for
#: flux drift and noise), and one that absorbs 95 % or more leaves too little signal; a probe outside the range is
#: in another normalisation (unit norm, an unnormalised FFT, another code's units) and is scaled to the data.
PROBE_POWER_RANGE = (0.8, 20.0)


def data_photons(scan: Scan, n: int = 32) -> float | None:
    """Mean photons per frame (valid pixels, negative counts as zero) of ``n`` evenly spaced frames; None when
    the scan has no frames or none hold photons."""
    if scan.n_frames == 0:
        return None
    valid = None if scan.mask is None else np.asarray(scan.mask, bool)
    totals = []
    for i in np.unique(np.linspace(0, scan.n_frames - 1, min(n, scan.n_frames)).astype(int)):
        frame = np.maximum(np.asarray(scan.frames(int(i), int(i) + 1)[0], np.float64), 0)
        totals.append(float(np.sum(frame if valid is None else frame[valid])))
    mean = float(np.mean(totals))
    return mean if np.isfinite(mean) and mean > 0 else None


def power_checked(probe: np.ndarray, scan: Scan, note: str) -> tuple[np.ndarray, str]:
    """``probe`` scaled to the data's photons per frame when its power is outside :data:`PROBE_POWER_RANGE` of
    them (the note says so and by how much), else unchanged: the network's input is the pattern over the probe's
    mean intensity, so a probe in another normalisation would feed it patterns millions of times too bright or
    too dark."""
    photons = data_photons(scan)
    power = float(np.sum(np.abs(probe) ** 2))
    if photons is None or not np.isfinite(power) or power <= 0:
        return probe, note
    ratio = power / photons
    lo, hi = PROBE_POWER_RANGE
    if lo <= ratio <= hi:
        return probe, note
    scaled = (probe * np.sqrt(photons / power)).astype(np.complex64)
    return scaled, (f"{note}; its power Σ|P|² = {power:.4g} was {ratio:.3g}× the data's {photons:.4g} photons per "
                    "frame (another normalisation), so it was scaled to the data")


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
    probe, note = np.asarray(probe, np.complex64), f"{note} (inside the model's probe family)"
    if fit == "none":  # cropped or binned frames hold another share of the photons
        probe, note = power_checked(probe, scan, note)
    return probe, note, None


def choose_probe(scan: Scan, manifest, *, fit: str, allow_mismatch: bool, model_path=None,
                 given: np.ndarray | None = None, given_name: str = ""
                 ) -> tuple[np.ndarray | None, str, np.ndarray | None]:
    """(probe, note, weight probe): the probe of the consistency pass and of the result (what ``refine --init``
    starts from), a note on where it came from, and the probe whose |P|² weights the stitching when it is not
    that one (else None).

    Refuses a scan whose probe differs from the model's training probe (similarity below
    :data:`PROBE_SIMILARITY_MIN`), because the network's mapping is probe-specific. A scan whose probe matches
    that of a model trained on measured data (``train --labels``) is handed on with the model's refined probe,
    scaled to the scan's probe power: the scan's file usually holds only the initial guess of the probe, whose
    far field need not sit where the data's does. The stitching is still weighted with the |P|² of the probe the
    network was trained for, where its loss held it to the labels: outside that region its outputs are not
    reliable.
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
    power_note = ""
    if fit == "none" and (getattr(manifest, "preprocessing", None) or {}).get("normalise") == "photons":
        probe, power_note = power_checked(probe, scan, "")  # the input is the pattern over the probe's intensity
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
        return probe, f"the scan's probe (similarity to the model's probe {sim:.3f}){power_note}", None
    return probe, "the scan's probe" + power_note, None


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
            out.append(load_any(path, validate=False, auto_mask=False).probe)
        except (PtyfastError, OSError):
            out.append(None)
    return out
