"""refine's probe update cannot make things worse than holding the probe: the probe trial keeps the branch of
lower data error, and a flat start absorbs the data's scale instead of the given probe."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ptyfast.metrics import evaluate_against_truth
from ptyfast.physics import default_probe, raster_positions
from ptyfast.physics.objects import random_object
from ptyfast.physics.simulate import simulate_scan
from ptyfast.refine import refine
from ptyfast.refine.output import result_weight


@pytest.fixture(scope="module")
def raster():
    """A 75 % raster scan (±1 px jitter) of a 220² object whose amplitude is well below 1, with the exact
    probe stored: a regular grid on which updating a known probe only hurts."""
    rng = np.random.default_rng(11)
    obj = random_object((220, 220), rng)
    obj = (0.6 * np.abs(obj)) * np.exp(1j * np.angle(obj))
    probe = default_probe()
    pos = raster_positions(obj.shape, probe.shape, overlap=0.75, jitter=1.0, rng=rng)
    return simulate_scan(obj.astype(np.complex64), probe, pos, photons=1e6, noise=True, rng=rng)


def scores(result, scan):
    quality, _, _ = evaluate_against_truth(np.asarray(result.object), result_weight(result), (0.0, 0.0), scan.truth)
    return quality.phase_psnr, quality.amplitude_psnr


def test_exact_probe_is_held_and_nothing_is_lost(raster):
    held = refine(raster, init="flat", iterations=30, update_probe=False)
    default = refine(raster, init="flat", iterations=30, update_probe=True, probe_start=2)
    trial = default.meta["probe_trial"]
    assert trial["kept"] == "held" and trial["error_held"] < trial["error_updated"]
    assert "probe held" in default.message and len(default.errors) == 30
    assert default.errors[-1] <= held.errors[-1] * (1 + 1e-6)
    assert scores(default, raster)[0] >= scores(held, raster)[0] - 1e-6
    untested = refine(raster, init="flat", iterations=30, update_probe=True, probe_start=2, probe_trial=0)
    assert scores(untested, raster)[0] < scores(held, raster)[0] - 0.5  # what the trial prevents


def test_a_wrong_probe_is_updated(raster):
    blurred = (ndimage.gaussian_filter(raster.probe.real, 2) + 1j * ndimage.gaussian_filter(raster.probe.imag, 2))
    blurred = blurred.astype(np.complex64)
    held = refine(raster, init="flat", iterations=30, probe=blurred, update_probe=False)
    default = refine(raster, init="flat", iterations=30, probe=blurred, update_probe=True, probe_start=2)
    assert default.meta["probe_trial"]["kept"] == "updated"
    assert default.errors[-1] < 0.5 * held.errors[-1]
    assert scores(default, raster)[0] > scores(held, raster)[0]


def test_flat_start_takes_the_data_scale_and_keeps_the_probe_power(raster):
    r = refine(raster, init="flat", iterations=20, update_probe=True, probe_start=2, probe_trial=0)
    assert r.meta["object_scaled_by"] == pytest.approx(np.sqrt(r.meta["probe_power_ratio"]))
    assert np.isclose(np.sum(np.abs(r.probe) ** 2), np.sum(np.abs(raster.probe) ** 2), rtol=1e-3)
    covered = result_weight(r) > 0.1 * result_weight(r).max()
    truth_mean = float(np.mean(np.abs(raster.truth)))
    assert np.mean(np.abs(np.asarray(r.object))[covered]) == pytest.approx(truth_mean, rel=0.1)
