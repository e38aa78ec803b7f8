"""Simulated scans: object + probe + path → Scan (optionally Poisson noise and a detector mask)."""

from __future__ import annotations

import numpy as np

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
