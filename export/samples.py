"""Simulated, preprocessed diffraction patterns: calibration data for INT8 and inputs for parity checks.

Numpy only (no torch), so the INT8 cache of the inference path can be filled without torch.
"""

from __future__ import annotations

import numpy as np

from ptyfast.models.manifest import Manifest


def simulated_patterns(n: int, manifest: Manifest, *, seed: int = 0, overlap: float = 0.75) -> np.ndarray:
    """``n`` noise-free far-field patterns of random objects scanned by the default probe, preprocessed.

    Parameters
    ----------
    n : int
        Number of patterns.
    manifest : Manifest
        Model manifest: its ``input_size`` and ``preprocessing`` are applied (the patterns are simulated
        at the probe's 128×128 size and cropped/padded to the input size if it differs), its object ranges
        shape the random objects.
    seed : int
        Seed of the objects and scan jitter.
    overlap : float
        Linear overlap of the raster scan (0.75 = the paper's densest scan).

    Returns
    -------
    numpy.ndarray
        (n, C, H, W) float32 network input (C from the manifest's probe conditioning).
    """
    from ptyfast.physics import default_probe, random_object, raster_positions
    from ptyfast.physics.simulate import simulate_scan
    from ptyfast.models.preprocess import fit_frames, preprocess

    probe = default_probe()
    win = probe.shape
    rng = np.random.default_rng(seed)
    frames: list[np.ndarray] = []
    total = 0
    while total < n:
        side = 384
        (alo, ahi), (plo, phi) = manifest.object_amplitude_range, manifest.object_phase_range
        obj = random_object((side, side), rng, amplitude_range=(alo, ahi), phase_range=(plo, phi))
        pos = raster_positions((side, side), win, overlap=overlap, jitter=2.0, rng=rng)
        scan = simulate_scan(obj, probe, pos)
        frames.append(np.asarray(scan.diffraction))
        total += len(pos)
    data = np.concatenate(frames)[:n]
    h, w = manifest.input_size
    if data.shape[1:] != (h, w):
        mode = "crop" if data.shape[1] >= h else "pad"
        data = fit_frames(data, (h, w), mode)
    power = float(np.sum(np.abs(probe) ** 2))
    return np.ascontiguousarray(preprocess(data, manifest, probe_power=power, probe=probe), dtype=np.float32)


def random_inputs(n: int, manifest: Manifest, *, seed: int = 0) -> np.ndarray:
    """(n, C, H, W) float32 uniform [0, 1) inputs (the range of max-normalised √I; smoke tests only)."""
    from ptyfast.models.preprocess import input_channels

    h, w = manifest.input_size
    return np.random.default_rng(seed).random((n, input_channels(manifest), h, w), dtype=np.float32)
