"""Physics conventions: photon count, phase ramps, scan paths, probes, gather/overlap-add adjointness."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from ptyfast.errors import InputError
from ptyfast.kernels import gather, overlap_add
from ptyfast.physics import (
    default_probe, exit_waves, far_field, fermat_positions, forward_intensity, fresnel_probe, random_object,
    raster_positions,
)
from ptyfast.physics.scanpath import overlap_to_step


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_photon_count_is_parseval(rng, dtype):
    probe = fresnel_probe((32, 32), pixel_size=1e-6 / 32, photons=500.0).astype(dtype)
    obj = random_object((80, 80), rng).astype(dtype)
    pos = rng.uniform(0, 80 - 33, size=(7, 2))
    intensity = forward_intensity(probe, obj, pos)
    psi = exit_waves(probe, obj, pos)
    np.testing.assert_allclose(intensity.sum(axis=(1, 2)), (np.abs(psi) ** 2).sum(axis=(1, 2)), rtol=1e-4)
    # unit object: exactly the probe's photons per frame
    flat = forward_intensity(probe, np.ones((80, 80), dtype), pos)
    np.testing.assert_allclose(flat.sum(axis=(1, 2)), 500.0, rtol=1e-4)


def test_zero_frequency_is_at_the_centre():
    psi = np.ones((16, 16), np.complex128)
    i = np.abs(far_field(psi)) ** 2
    assert np.unravel_index(i.argmax(), i.shape) == (8, 8)
    assert i[8, 8] == pytest.approx(256.0)


@pytest.mark.parametrize("shift", [(3, 0), (0, -5), (2, 7)])
def test_shifted_object_gives_a_phase_ramp(rng, shift):
    n = 32
    psi = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    moved = np.roll(psi, shift, axis=(0, 1))
    k = np.arange(n) - n // 2  # frequency index after fftshift
    ramp = np.exp(-2j * np.pi * (k[:, None] * shift[0] + k[None, :] * shift[1]) / n)
    np.testing.assert_allclose(far_field(moved), far_field(psi) * ramp, atol=1e-10)
    np.testing.assert_allclose(np.abs(far_field(moved)), np.abs(far_field(psi)), atol=1e-10)


@pytest.mark.parametrize("overlap, step", [(0.75, 32), (0.5, 64), (0.25, 96), (0.0, 128)])
def test_overlap_to_step(overlap, step):
    assert overlap_to_step(overlap, 128) == step
    pos = raster_positions((600, 600), (128, 128), overlap=overlap)
    assert np.all(np.diff(np.unique(pos[:, 0])) == step)
    assert np.all(np.diff(np.unique(pos[:, 1])) == step)


@pytest.mark.parametrize("overlap", [-0.1, 1.0])
def test_overlap_out_of_range_is_refused(overlap):
    with pytest.raises(InputError, match="overlap"):
        overlap_to_step(overlap, 128)


def test_jitter_bounds(rng):
    grid = raster_positions((600, 600), (128, 128), overlap=0.5)
    jit = raster_positions((600, 600), (128, 128), overlap=0.5, jitter=2.0, rng=rng)
    dev = np.abs(jit - grid)
    assert dev.max() <= 2.0 and dev.max() > 1.0
    assert jit.min() >= 0 and jit.max() <= 600 - 128 - 1
    again = raster_positions((600, 600), (128, 128), overlap=0.5, jitter=2.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(jit, again)  # seedable


def test_fermat_spacing_matches_the_raster_step():
    pos = fermat_positions((600, 600), (128, 128), overlap=0.5)
    d, _ = cKDTree(pos).query(pos, k=2)
    assert 0.6 * 64 < np.median(d[:, 1]) < 1.2 * 64
    assert pos.min() >= 0 and pos.max() <= 600 - 128 - 1


def _fwhm(profile: np.ndarray) -> float:
    half = profile.max() / 2
    above = np.flatnonzero(profile >= half)
    return float(above[-1] - above[0] + 1)


def test_fresnel_probe_photons_and_focus():
    px = 1e-6 / 128
    focus = fresnel_probe((128, 128), focus_size=100e-9, defocus=0.0, pixel_size=px, photons=1e6)
    # depth of focus λ/NA² ≈ 0.4 mm for a 100 nm focus at 0.1 nm: 0.5 mm out of focus the beam has spread
    out = fresnel_probe((128, 128), focus_size=100e-9, defocus=500e-6, pixel_size=px, photons=1e6)
    for p in (focus, out):
        assert np.sum(np.abs(p) ** 2) == pytest.approx(1e6, rel=1e-5)
    i = np.abs(focus) ** 2
    cy, cx = np.unravel_index(i.argmax(), i.shape)
    assert (cy, cx) == (64, 64)
    assert _fwhm(i[cy]) * px == pytest.approx(100e-9, rel=0.3)
    assert _fwhm(np.abs(out[64]) ** 2) > 2 * _fwhm(i[cy])


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_gather_overlap_add_are_adjoint(rng, dtype):
    shape, window = (40, 50), (8, 12)
    obj = rng.standard_normal(shape).astype(dtype)
    if np.iscomplexobj(obj):
        obj = obj + 1j * rng.standard_normal(shape)
    # sub-pixel positions, including windows hanging over every edge
    pos = np.concatenate([rng.uniform(0, 30, (6, 2)), [[-3.4, -2.7], [35.5, 44.25], [-0.5, 45.0], [39.9, -11.9]]])
    patches = rng.standard_normal((len(pos),) + window).astype(dtype)
    if np.iscomplexobj(patches):
        patches = patches + 1j * rng.standard_normal(patches.shape)
    lhs = np.vdot(patches, gather(obj, pos, window))
    rhs = np.vdot(overlap_add(np.zeros(shape, dtype), patches, pos), obj)
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_gather_integer_positions_are_exact_slices(rng):
    obj = rng.standard_normal((20, 20))
    patch = gather(obj, np.array([[3.0, 5.0]]), (4, 6))[0]
    np.testing.assert_array_equal(patch, obj[3:7, 5:11])


def test_simulated_scan_respects_mask(small_scan):
    frames = np.asarray(small_scan.diffraction)
    assert np.all(frames[:, ~small_scan.mask] == 0)
    assert frames.sum(axis=(1, 2)).max() <= 1e4 * 1.001  # |O| ≤ 1: at most the probe's photons


def test_default_probe_is_confined_and_is_its_documented_fresnel_probe():
    from ptyfast.physics.probe import DEFAULT_PROBE_PARAMETERS, energy_radius, oversampling_problem, paper_probe

    p = default_probe()
    assert p.shape == (128, 128) and p.dtype == np.complex64
    np.testing.assert_allclose(p, fresnel_probe((128, 128), **DEFAULT_PROBE_PARAMETERS), atol=1e-3 * np.abs(p).max())
    assert np.sum(np.abs(p) ** 2) == pytest.approx(1e6, rel=1e-4)
    assert energy_radius(p) < 32 and oversampling_problem(p) == ""  # support ≤ half the window
    assert energy_radius(paper_probe()) > 64 and "not oversampled" in oversampling_problem(paper_probe())
