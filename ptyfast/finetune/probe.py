"""The probe fine-tuning starts from, and how far a learned probe is from the truth."""

from __future__ import annotations

import os

import numpy as np

from ptyfast.errors import InputError

__all__ = ["resolve_probe", "probe_error"]


def resolve_probe(scan, probe: str | os.PathLike | np.ndarray | None, *, source: str = "the scan") -> np.ndarray:
    """The probe to fine-tune with: an array, a file (``.npy``/CXI), ``"fresnel"`` (a simulated focused
    probe, normalised to the scan's mean photons per frame) or ``None`` (the scan's own probe).

    Raises
    ------
    InputError
        No probe anywhere, an unreadable file, or a probe whose shape differs from the frames.
    """
    from ptyfast.io.convert import load_probe
    from ptyfast.physics.probe import fresnel_probe

    shape = scan.frame_shape
    if probe is None:
        if scan.probe is None:
            raise InputError(
                f"{source} carries no probe; pass --probe FILE (.npy or CXI) or --probe fresnel for a simulated "
                "guess (best with --learn-probe)."
            )
        p = np.asarray(scan.probe)
        where = source
    elif isinstance(probe, np.ndarray):
        p, where = probe, "the given probe"
    elif str(probe).lower() == "fresnel":
        photons = float(np.mean(scan.frames(0, min(scan.n_frames, 64)).sum(axis=(1, 2))))
        geo = scan.geometry
        pixel = geo.object_pixel_size(shape[0]) if not scan.meta.get("geometry_defaulted") else 1e-6 / shape[0]
        try:
            p = fresnel_probe(shape, wavelength=geo.wavelength, pixel_size=pixel, photons=max(photons, 1.0))
        except InputError:
            p = fresnel_probe(shape, pixel_size=1e-6 / shape[0], photons=max(photons, 1.0))
        where = "the Fresnel guess"
    else:
        p = load_probe(probe)
        where = f"probe file {probe}"
    p = np.asarray(p)
    if p.ndim != 2 or tuple(p.shape) != tuple(shape):
        raise InputError(
            f"{where} has shape {tuple(p.shape)} but the diffraction frames are {tuple(shape)}; "
            "give a probe of the frames' size."
        )
    if not np.all(np.isfinite(p)) or not np.any(p):
        raise InputError(f"{where} is all zeros or contains NaN/Inf.")
    return p.astype(np.complex64)


def probe_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Relative probe error after removing the global complex factor (phase and scale ambiguity):
    ``min_c ‖c·P_est − P_true‖ / ‖P_true‖``, ``c = ⟨P_est, P_true⟩ / ‖P_est‖²``."""
    e = np.asarray(estimate, np.complex128).ravel()
    t = np.asarray(truth, np.complex128).ravel()
    c = np.vdot(e, t) / max(np.vdot(e, e).real, 1e-300)
    return float(np.linalg.norm(c * e - t) / max(np.linalg.norm(t), 1e-300))
