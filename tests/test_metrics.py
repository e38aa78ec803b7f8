"""Metrics: global phase offset removal, PSNR/SSIM definitions, FRC, truth-grid alignment."""

from __future__ import annotations

import numpy as np
import pytest

from ptyfast.metrics import aligned_phase, baselines, compare, frc, frc_resolution, psnr, truth_on_grid
from ptyfast.physics.objects import random_object


def test_global_phase_offset_does_not_change_scores():
    truth = random_object((96, 96), 0)
    shifted = truth * np.exp(1j * 2.5)
    q = compare(shifted, truth)
    assert q.phase_mse < 1e-10 and q.phase_psnr > 80 and q.phase_ssim > 0.999


def test_aligned_phase_unwraps_relative_to_truth():
    truth = np.exp(1j * np.full((8, 8), 3.1))
    recon = np.exp(1j * np.full((8, 8), -3.1))  # 0.083 rad away across the branch cut
    ph = aligned_phase(recon, truth)
    assert np.allclose(ph, 3.1, atol=1e-6)  # the offset is removed, no 2π jump


def test_psnr_uses_truth_span():
    ref = np.linspace(0, 2, 100)
    test = ref + 0.02
    assert psnr(ref, test) == pytest.approx(10 * np.log10(4 / 0.0004))


def test_frc_is_one_for_identical_images_and_low_for_independent_noise():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 64))
    f, c = frc(a, a)
    assert np.allclose(c, 1)
    _, c2 = frc(a, rng.standard_normal((64, 64)))
    assert np.abs(c2[4:]).mean() < 0.2
    assert frc_resolution(f, c2) < 0.2


def test_baselines_flat_is_worse_than_blurred():
    truth = random_object((128, 128), 3)
    b = baselines(truth)
    flat, blurred = b["flat"], b["blurred σ=4px"]
    assert blurred.phase_psnr > flat.phase_psnr + 3


def test_truth_on_grid_crops_and_pads():
    truth = np.arange(100, dtype=np.complex64).reshape(10, 10)
    g = truth_on_grid(truth, (2, -1), (4, 4))
    assert g[0, 0] == 0 and g[0, 1] == truth[2, 0] and g[3, 3] == truth[5, 2]


def test_object_error_ignores_global_phase_and_scale_but_not_structure():
    """The ePIE paper's object error: 0 for the truth times any complex factor, 1 for zeros, in between for
    a noisy copy, and only the region's pixels count."""
    from ptyfast.metrics import object_error

    rng = np.random.default_rng(0)
    truth = (0.5 + rng.random((32, 32))) * np.exp(1j * rng.random((32, 32)))
    assert object_error(truth * 0.3 * np.exp(2.1j), truth) == pytest.approx(0, abs=1e-12)
    assert object_error(np.zeros_like(truth), truth) == pytest.approx(1)
    noisy = truth + 0.1 * (rng.normal(size=truth.shape) + 1j * rng.normal(size=truth.shape))
    assert 0.005 < object_error(noisy, truth) < 0.05
    region = np.zeros(truth.shape, bool)
    region[:16] = True
    spoiled = noisy.copy()
    spoiled[16:] = 0
    assert object_error(spoiled, truth, region) == pytest.approx(object_error(noisy, truth, region))
