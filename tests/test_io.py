"""CXI round trip, foreign layouts (P25 near-field CXI, Tike npz, PyNX, PtyNet), validation, atomic writes."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from ptyfast.errors import InputError
from ptyfast.io import atomic_path, load_any, read_cxi, read_image, read_probe, write_cxi
from ptyfast.physics.nearfield import detect_near_field
from ptyfast.scan import PLANCK_TIMES_C, Geometry, LazyFrames, validate_frames

P25 = "cdtools-p25-nearfield/PETRAIII_P25_Near_Field_Ptycho.cxi"
TIKE = "tike-siemens-star/siemens-star-small.npz.bz2"


# ------------------------------------------------------------------------------------------------ atomic


def test_atomic_path_renames_only_on_success(tmp_path):
    final = tmp_path / "out.bin"
    final.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".out.bin.tmp-")
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert final.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with atomic_path(final) as tmp:
        tmp.write_text("new")
    assert final.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_path_refuses_missing_or_readonly_directory(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        with atomic_path(tmp_path / "nope" / "out.cxi"):
            pass
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(InputError, match="is not writable"):
            with atomic_path(ro / "out.cxi"):
                pass
    finally:
        ro.chmod(0o700)


# ------------------------------------------------------------------------------------------------ CXI


def test_cxi_round_trip_is_exact(small_scan, small_cxi):
    scan = read_cxi(small_cxi)
    assert isinstance(scan.diffraction, h5py.Dataset) and scan.diffraction.chunks == (1, 64, 64)
    np.testing.assert_array_equal(scan.positions, small_scan.positions)
    assert scan.geometry == small_scan.geometry
    np.testing.assert_array_equal(scan.probe, small_scan.probe)
    np.testing.assert_array_equal(scan.mask, small_scan.mask)
    np.testing.assert_array_equal(scan.truth, small_scan.truth)
    np.testing.assert_array_equal(scan.frames(0, scan.n_frames), small_scan.diffraction)
    assert scan.near_field is False and scan.meta["test"] == "small_scan"
    eager = read_cxi(small_cxi, lazy=False)
    assert isinstance(eager.diffraction, np.ndarray) and "h5file" not in eager.meta


def test_cxi_layout_follows_the_spec(small_scan, small_cxi):
    dx = small_scan.geometry.object_pixel_size(64)
    with h5py.File(small_cxi, "r") as f:
        assert f.get("entry_1/data_1/data", getlink=True).path == "/entry_1/instrument_1/detector_1/data"
        assert f.get("entry_1/data_1/translation", getlink=True).path == "/entry_1/sample_1/geometry_1/translation"
        t = f["entry_1/sample_1/geometry_1/translation"][()]
        assert t.shape == (small_scan.n_frames, 3)
        np.testing.assert_allclose(t[:, :2], -small_scan.positions[:, ::-1] * dx)  # (x, y) metres
        assert f["entry_1/instrument_1/source_1/energy"][()] == pytest.approx(PLANCK_TIMES_C / 1e-10)
        assert f["entry_1/instrument_1/detector_1/distance"][()] == small_scan.geometry.distance
        mask = f["entry_1/instrument_1/detector_1/mask"][()]
        assert mask.dtype == np.uint32 and mask.sum() == 3  # 0 = good, bit 0 = invalid
        assert json.loads(f["entry_1/ptyfast"].attrs["meta_json"])["simulated"] is True


def test_foreign_translations_convert_to_pixels(small_scan, small_cxi):
    with h5py.File(small_cxi, "a") as f:
        del f["entry_1/ptyfast"]  # as a foreign reader would see it: metres only
    scan = read_cxi(small_cxi)
    expected = small_scan.positions - small_scan.positions.min(axis=0)
    np.testing.assert_allclose(scan.positions, expected, atol=1e-9)
    assert scan.positions.min() == 0.0


def test_pynx_layout_energy_and_mask_bits(make_cxi):
    rng = np.random.default_rng(0)
    n = 8
    t = np.c_[rng.uniform(-1e-6, 1e-6, (n, 2)), np.zeros(n)]
    mask = np.zeros((16, 16), np.uint32)
    mask[0, 0] = 0x1000  # "above threshold" only: still a good pixel
    mask[1, 1] = 0x2  # any other bit: bad
    mask[2, 2] = 0x1001
    probe = (rng.standard_normal((1, 16, 16)) + 1j).astype(np.complex64)
    path = make_cxi("pynx.cxi", data=rng.poisson(3.0, (1, n, 16, 16)).astype(np.float32), translation=t.T,
                    energy=PLANCK_TIMES_C / 1.5e-10, wavelength=None, mask=mask, probe=probe,
                    probe_path="entry_1/probe")
    scan = read_cxi(path)
    assert isinstance(scan.diffraction, LazyFrames) and scan.diffraction.shape == (n, 16, 16)
    assert scan.meta["translation_layout"].startswith("(3, N)")
    assert scan.geometry.wavelength == pytest.approx(1.5e-10)
    assert scan.mask[0, 0] and not scan.mask[1, 1] and not scan.mask[2, 2] and scan.mask.sum() == 254
    np.testing.assert_array_equal(scan.probe, probe[0])
    np.testing.assert_array_equal(read_probe(path), probe[0])
    dx = scan.geometry.object_pixel_size(16)
    expected = -t[:, [1, 0]] / dx
    np.testing.assert_allclose(scan.positions, expected - expected.min(axis=0), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(scan.frames(2, 5), scan.diffraction.dataset[0, 2:5])


def test_lazy_frames_indexing(make_cxi):
    data = np.arange(1 * 8 * 16 * 16, dtype=np.float32).reshape(1, 8, 16, 16)
    scan = read_cxi(make_cxi("four.cxi", data=data))
    lf = scan.diffraction
    np.testing.assert_array_equal(lf[3], data[0, 3])
    np.testing.assert_array_equal(lf[[5, 1, 5]], data[0, [5, 1, 5]])
    np.testing.assert_array_equal(lf[1:3, 2:4, 5], data[0, 1:3, 2:4, 5])
    np.testing.assert_array_equal(np.asarray(lf), data[0])


def test_explicit_near_field_override(make_cxi):
    path = make_cxi()
    assert read_cxi(path, near_field=True).near_field is True
    with h5py.File(path, "a") as f:
        f["entry_1"].attrs["near_field"] = True
    scan = read_cxi(path)
    assert scan.near_field and "attribute near_field" in scan.meta["near_field_reason"]


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_input_gives_one_clear_error(bad_input):
    path, message = bad_input
    with pytest.raises(InputError, match=message) as err:
        load_any(path)
    assert "\n" not in str(err.value)


def test_validate_frames_ignores_masked_pixels():
    frames = np.ones((3, 4, 4))
    frames[1, 2, 2] = np.nan
    frames[2, 0, 1] = -1
    mask = np.ones((4, 4), bool)
    mask[2, 2] = mask[0, 1] = False
    validate_frames(frames, mask=mask)
    with pytest.raises(InputError, match="frame 11 contains NaN"):
        validate_frames(frames, start=10)


def test_writing_invalid_frames_leaves_no_file(small_scan, tmp_path):
    bad = small_scan.with_(diffraction=np.where(np.isfinite(small_scan.diffraction), -small_scan.diffraction - 1, 0))
    with pytest.raises(InputError, match="negative counts"):
        write_cxi(tmp_path / "bad.cxi", bad)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ near field


def test_simulated_scan_is_far_field(small_scan):
    near, reason, score = detect_near_field(small_scan)
    assert not near and score < 0.2, reason


def test_p25_near_field_cxi(shared_file):
    scan = read_cxi(shared_file(P25))
    assert (scan.n_frames, scan.frame_shape) == (200, (100, 100))
    assert scan.geometry.wavelength == pytest.approx(9.794912e-11, rel=1e-6)
    assert scan.geometry.distance == pytest.approx(1.12, rel=1e-6)
    assert scan.geometry.pixel_size == pytest.approx(5.5e-5, rel=1e-6)
    assert scan.geometry.energy == pytest.approx(2.0280385e-15, rel=1e-5)
    assert int((~scan.mask).sum()) == 5
    assert scan.positions.min() == 0.0 and scan.probe is None
    assert isinstance(scan.diffraction, h5py.Dataset)
    assert scan.near_field, scan.meta["near_field_reason"]
    assert scan.meta["near_field_score"] > 0.9


def test_tike_siemens_star_converts_far_field(shared_file):
    scan = load_any(shared_file(TIKE))
    assert (scan.n_frames, scan.frame_shape) == (516, (128, 128))
    assert scan.meta["geometry_defaulted"] and scan.geometry == Geometry()
    assert not scan.near_field and scan.meta["near_field_score"] < 0.6
    mean = scan.frames(0, scan.n_frames).mean(axis=0)
    peak = np.unravel_index(mean.argmax(), mean.shape)
    assert np.hypot(peak[0] - 64, peak[1] - 64) < 32  # corner zero frequency moved to the centre
    yy, xx = np.indices(mean.shape)
    centroid = np.array([(yy * mean).sum(), (xx * mean).sum()]) / mean.sum()
    np.testing.assert_allclose(centroid, 64, atol=4)
    assert scan.positions.min() == 0 and 300 < scan.positions.max() < 350
    assert scan.probe is not None and scan.probe.shape == (128, 128)


# ------------------------------------------------------------------------------------------------ other layouts


def _tike_like(path, n=9):
    rng = np.random.default_rng(2)
    data = np.fft.ifftshift(rng.poisson(2.0, (n, 16, 16)).astype(np.float32), axes=(-2, -1))
    scan = rng.uniform(-30, 30, (1, n, 2)).astype(np.float32)
    probe = (rng.standard_normal((1, 1, 1, 1, 16, 16)) * (1 + 1j)).astype(np.complex64)
    np.savez(path, data=data[None], scan=scan, probe=probe)
    return data, scan


def test_tike_layout_small(tmp_path):
    data, pos = _tike_like(tmp_path / "t.npz")
    scan = load_any(tmp_path / "t.npz")
    np.testing.assert_array_equal(scan.diffraction, np.fft.fftshift(data, axes=(-2, -1)))
    np.testing.assert_allclose(scan.positions, pos[0] - pos[0].min(axis=0))
    assert scan.meta["format"] == "tike-npz" and scan.meta["fftshifted_on_import"]


def test_ptynet_directory_and_npz(tmp_path, small_scan):
    d = tmp_path / "ptynet"
    d.mkdir()
    np.save(d / "diffraction.npy", small_scan.diffraction)
    np.save(d / "positions.npy", small_scan.positions + 5)
    np.save(d / "probe.npy", small_scan.probe)
    (d / "geometry.json").write_text(json.dumps({"wavelength": 2e-10, "distance": 1.0, "pixel_size": 5e-5}))
    scan = load_any(d)
    np.testing.assert_allclose(scan.positions, small_scan.positions - small_scan.positions.min(axis=0))
    assert scan.geometry == Geometry(2e-10, 1.0, 5e-5) and not scan.meta["geometry_defaulted"]
    np.savez(tmp_path / "p.npz", diffraction=small_scan.diffraction, positions=small_scan.positions)
    scan = load_any(tmp_path / "p.npz")
    assert scan.meta["format"] == "ptynet" and scan.meta["geometry_defaulted"] and scan.probe is None


def test_unknown_layouts_are_refused(tmp_path):
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(InputError, match="unrecognised scan format"):
        load_any(tmp_path / "x.txt")
    np.savez(tmp_path / "y.npz", foo=np.ones(3))
    with pytest.raises(InputError, match="no 'data' array"):
        load_any(tmp_path / "y.npz")
    with pytest.raises(InputError, match="does not exist"):
        load_any(tmp_path / "missing.cxi")


# ------------------------------------------------------------------------------------------------ images


def test_read_image_rgb_to_grey(tmp_path):
    from skimage import io

    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 1] = 255
    io.imsave(tmp_path / "g.png", rgb, check_contrast=False)
    img = read_image(tmp_path / "g.png")
    assert img.shape == (10, 12) and img.dtype == np.float64
    assert 0.5 < img.mean() < 0.9  # luminance of pure green
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(InputError, match="could not be read"):
        read_image(tmp_path / "bad.png")


def test_bundled_preview_colours_are_matplotlibs():
    """The previews' bundled colour tables are the matplotlib maps they were made from (so a preview looks as it
    did when matplotlib drew its colours)."""
    from matplotlib import colormaps

    from ptyfast.runtime.output import LEVELS, PREVIEW_MAPS, colour_table

    for name in PREVIEW_MAPS:
        want = (colormaps[name](np.linspace(0.0, 1.0, LEVELS))[:, :3] * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(colour_table(name, LEVELS), want)
    assert colour_table("twilight", 16).shape == (16, 3)  # any other map still comes from matplotlib
