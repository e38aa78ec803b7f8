"""Scans written for tests."""

from __future__ import annotations

import numpy as np


def scan_160(path):
    """A 300² procedural object scanned with the default probe padded to 160² frames (16 frames, 75 % overlap,
    10⁶ photons): frames larger than the shipped 128² model's input, for ``--fit crop``. Returns the CXI path."""
    from ptyfast.io.cxi import write_cxi
    from ptyfast.physics import default_probe, random_object, raster_positions
    from ptyfast.physics.simulate import simulate_scan

    rng = np.random.default_rng(0)
    probe = np.zeros((160, 160), np.complex64)
    probe[16:144, 16:144] = default_probe()
    obj = random_object((300, 300), rng)
    pos = raster_positions(obj.shape, probe.shape, overlap=0.75, jitter=1.0, rng=rng)
    return write_cxi(path, simulate_scan(obj, probe, pos, photons=1e6, rng=rng))
