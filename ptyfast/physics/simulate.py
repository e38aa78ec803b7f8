"""Simulated scans: object + probe + path → Scan (optionally Poisson noise and a detector mask)."""

from __future__ import annotations

import numpy as np

from ptyfast.choices import DetectorDtype
from ptyfast.physics.forward import forward_intensity
from ptyfast.physics.probe import normalise_probe
from ptyfast.scan import Geometry, Scan


def poisson_noise(intensity: np.ndarray, rng) -> np.ndarray:
    """Photon-counting noise: draw counts from Poisson(I) (I in photons)."""
    rng = np.random.default_rng(rng)
    return rng.poisson(np.maximum(intensity, 0)).astype(np.float32)


def simulate_scan(
    obj: np.ndarray,
    probe: np.ndarray,
    positions: np.ndarray,
    *,
    photons: float | None = None,
    noise: bool = False,
    rng=None,
    mask: np.ndarray | None = None,
    geometry: Geometry | None = None,
    chunk: int = 256,
    meta: dict | None = None,
) -> Scan:
    """Far-field intensities of ``obj`` scanned by ``probe`` at ``positions``.

    ``photons`` rescales the probe to sum(|P|²) = photons first (the photon budget per frame for a
    unit-amplitude object). ``mask`` (bool, True = valid) zeroes the invalid detector pixels.
    """
    rng = np.random.default_rng(rng)
    probe = normalise_probe(probe, photons) if photons is not None else probe
    n = len(positions)
    data = np.empty((n,) + probe.shape, dtype=np.float32)
    for s in range(0, n, chunk):
        i = forward_intensity(probe, obj, positions[s : s + chunk])
        data[s : s + chunk] = poisson_noise(i, rng) if noise else i
    if mask is not None:
        data *= mask
    return Scan(
        diffraction=data,
        positions=np.asarray(positions, dtype=np.float64),
        geometry=geometry or Geometry(),
        probe=probe.astype(np.complex64),
        mask=mask,
        truth=obj.astype(np.complex64),
        meta=dict(meta or {}, simulated=True, noise=bool(noise), photons=photons),
    )


DETECTOR_DTYPES = DetectorDtype.values()


def detector_counts(data: np.ndarray, *, beamstop: float = 0.0, saturation: float | None = None,
                    pinned: float = 0.0, dtype: str = "float32", rng=None) -> tuple[np.ndarray, dict]:
    """What a real counting detector would record of intensities ``data`` (N, H, W), zero frequency at
    (H//2, W//2): a beam stop of radius ``beamstop`` pixels blocks the centre (zero counts), counts clip at
    ``saturation``, a fraction ``pinned`` of pixels is stuck at the integer ``dtype``'s maximum in every frame
    (how Eiger-type detectors mark dead or hot pixels; 2³²−1 for float32), and the frames are stored as
    ``dtype`` (rounded). Returns the frames and what was done (for the scan's provenance)."""
    if dtype not in DETECTOR_DTYPES:
        from ptyfast.errors import InputError

        raise InputError(f"unknown detector dtype '{dtype}'; choose one of {', '.join(DETECTOR_DTYPES)}.")
    rng = np.random.default_rng(rng)
    out = np.array(data, dtype=np.float64)
    h, w = out.shape[-2:]
    done: dict = {}
    if beamstop > 0:
        yy, xx = np.mgrid[:h, :w]
        out[:, (yy - h // 2) ** 2 + (xx - w // 2) ** 2 <= beamstop**2] = 0
        done["beamstop_radius_px"] = beamstop
    if saturation is not None:
        np.minimum(out, saturation, out=out)
        done["saturation_counts"] = saturation
    top = float(np.iinfo(dtype).max) if dtype != "float32" else 2.0**32 - 1
    if dtype != "float32":
        np.clip(np.rint(out), 0, top - 1, out=out)
    if pinned > 0:
        k = max(1, int(round(pinned * h * w)))
        idx = rng.choice(h * w, size=k, replace=False)
        out.reshape(len(out), -1)[:, idx] = top
        done["pinned_pixels"] = k
    return out.astype(dtype), done


def random_scan(size: int, seed: int = 0, *, overlap: float = 0.75, jitter: float = 1.0, photons: float = 1e6,
                noise: bool = True, meta: dict | None = None) -> Scan:
    """A procedural size² object scanned with the default probe on a raster at ``overlap`` (benchmarks and
    tests that need a realistic scan of a given size)."""
    from ptyfast.physics.objects import random_object
    from ptyfast.physics.probe import default_probe
    from ptyfast.physics.scanpath import raster_positions

    rng = np.random.default_rng(seed)
    probe = default_probe()
    obj = random_object((size, size), rng)
    pos = raster_positions(obj.shape, probe.shape, overlap=overlap, jitter=jitter, rng=rng)
    return simulate_scan(obj, probe, pos, photons=photons, noise=noise, rng=rng, meta=meta)
