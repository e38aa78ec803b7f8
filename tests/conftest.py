"""Shared fixtures: a small simulated scan (and its CXI file), and the optional ../shared/data folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(os.environ.get("PTYFAST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (or $PTYFAST_SHARED_DATA); the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def small_scan():
    """A noise-free simulated scan: 200² procedural object, 64² Fresnel probe (10⁴ photons), raster 50 %
    overlap with 1 px jitter (25 frames), a detector mask with 3 bad pixels, ground truth attached."""
    from ptyfast.physics import fresnel_probe, random_object, raster_positions
    from ptyfast.physics.simulate import simulate_scan

    rng = np.random.default_rng(1)
    probe = fresnel_probe((64, 64), pixel_size=1e-6 / 64, photons=1e4)
    obj = random_object((200, 200), rng)
    pos = raster_positions(obj.shape, probe.shape, overlap=0.5, jitter=1.0, rng=rng)
    mask = np.ones(probe.shape, bool)
    mask[[0, 5, 63], [3, 40, 63]] = False
    return simulate_scan(obj, probe, pos, mask=mask, rng=rng, meta={"test": "small_scan"})


@pytest.fixture
def small_cxi(tmp_path, small_scan) -> Path:
    """``small_scan`` written to ``tmp_path/small.cxi``."""
    from ptyfast.io import write_cxi

    return write_cxi(tmp_path / "small.cxi", small_scan)
