"""Network-input preprocessing (as the manifest says) and fitting frames to the model's input size."""

from __future__ import annotations

import numpy as np
import pytest

from ptyfast.errors import InputError
from ptyfast.models.preprocess import fit_frames, preprocess

FRAMES = np.random.default_rng(0).poisson(20.0, size=(3, 8, 8)).astype(np.float32)


def test_default_is_sqrt_over_per_pattern_max():
    x = preprocess(FRAMES)
    assert x.shape == (3, 1, 8, 8) and x.dtype == np.float32
    expected = np.sqrt(FRAMES) / np.sqrt(FRAMES).reshape(3, -1).max(axis=1)[:, None, None]
    np.testing.assert_allclose(x[:, 0], expected, rtol=1e-6)


def test_log1p_and_std_normalisation():
    x = preprocess(FRAMES, preprocessing={"transform": "log1p", "normalise": "std"})[:, 0]
    np.testing.assert_allclose(x.reshape(3, -1).mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(x.reshape(3, -1).std(axis=1), 1, rtol=1e-4)


def test_negative_counts_are_clipped_and_unknown_options_refused():
    x = preprocess(-np.ones((1, 4, 4), np.float32))
    assert np.all(x == 0)
    with pytest.raises(InputError, match="transform 'cube'"):
        preprocess(FRAMES, preprocessing={"transform": "cube"})
    with pytest.raises(InputError, match="normalisation 'l2'"):
        preprocess(FRAMES, preprocessing={"transform": "sqrt", "normalise": "l2"})


def test_fit_frames_crop_bin_pad_keep_the_centre():
    f = np.zeros((1, 16, 16), np.float32)
    f[0, 8, 8] = 1.0  # zero frequency at the centre
    assert fit_frames(f, (8, 8), "crop")[0, 4, 4] == 1.0
    assert fit_frames(f, (8, 8), "bin")[0, 4, 4] == 1.0
    assert fit_frames(f, (32, 32), "pad")[0, 16, 16] == 1.0
    with pytest.raises(InputError, match="--fit crop"):
        fit_frames(f, (8, 8), "none")
    with pytest.raises(InputError, match="integer multiple"):
        fit_frames(f, (6, 6), "bin")


def test_fit_probe_and_mask():
    from ptyfast.physics import fresnel_probe
    from ptyfast.physics.forward import far_field
    from ptyfast.models.preprocess import fit_mask, fit_probe

    probe = fresnel_probe((32, 32), pixel_size=1e-6 / 32, photons=1e3)
    binned = fit_probe(probe, (16, 16), "bin")  # same object pixel, smaller window: centre of the real-space probe
    np.testing.assert_allclose(binned, probe[8:24, 8:24], rtol=1e-6)
    cropped = fit_probe(probe, (16, 16), "crop")  # coarser object pixel: the far field is cropped
    np.testing.assert_allclose(far_field(cropped), far_field(probe)[8:24, 8:24], rtol=1e-4, atol=1e-5)
    mask = np.ones((16, 16), bool)
    mask[0, 0] = False
    m = fit_mask(mask, (8, 8), "bin")
    assert m.shape == (8, 8) and not m[0, 0] and m.sum() == 63
    assert fit_mask(mask, (32, 32), "pad").sum() == 255  # padded pixels are not measured


def test_photon_normalisation_is_flux_independent_and_keeps_the_amplitude_scale():
    """√(I / mean|P|²): ten times the flux with a ten times brighter probe gives the same input; a darker
    object (same probe) gives a proportionally smaller input (max normalisation would hide that)."""
    prep = {"transform": "sqrt", "normalise": "photons"}
    x = preprocess(FRAMES, preprocessing=prep, probe_power=1e3)
    np.testing.assert_allclose(preprocess(10 * FRAMES, preprocessing=prep, probe_power=1e4), x, rtol=1e-5)
    np.testing.assert_allclose(preprocess(0.25 * FRAMES, preprocessing=prep, probe_power=1e3), 0.5 * x, rtol=1e-5)
    per_frame = preprocess(FRAMES, preprocessing=prep, probe_power=np.full(len(FRAMES), 1e3))
    np.testing.assert_allclose(per_frame, x)
    with pytest.raises(InputError, match="probe's total intensity"):
        preprocess(FRAMES, preprocessing=prep)


def test_masked_pixels_never_reach_the_network():
    mask = np.ones(FRAMES.shape[1:], bool)
    mask[0, :] = False
    hot = FRAMES.copy()
    hot[:, 0, :] = 1e9
    a = preprocess(hot, preprocessing={"transform": "sqrt", "normalise": "max"}, mask=mask)
    b = preprocess(FRAMES, preprocessing={"transform": "sqrt", "normalise": "max"}, mask=mask)
    np.testing.assert_array_equal(a, b)
    # the masked row is filled from its valid neighbours (row 1), not left as a dark stripe
    row1 = FRAMES[:, 1, :].astype(np.float64)
    padded = np.pad(row1, ((0, 0), (1, 1)), constant_values=np.nan)
    expected = np.nanmean(np.stack([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]]), axis=0)
    filled = preprocess(np.concatenate([expected[:, None, :], FRAMES[:, 1:, :]], axis=1).astype(np.float32),
                        preprocessing={"transform": "sqrt", "normalise": "max"})
    np.testing.assert_allclose(a, filled, rtol=1e-5, atol=1e-6)
    assert np.all(a[:, 0, 0, :] > 0)
