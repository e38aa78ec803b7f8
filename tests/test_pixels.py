"""Detector pixel sanity: pixels that hold no photon counts are found on read, masked, filled for the network,
skipped by the consistency figure and stored with every output; clean data loses nothing."""

from __future__ import annotations

import contextlib
import json

import h5py
import numpy as np
import pytest
from scipy import ndimage

from cli_helpers import one_error_line
from cli_helpers import app, runner
from ptyfast.io import load_any, write_cxi
from ptyfast.io.pixels import find_bad_pixels
from ptyfast.models.preprocess import fill_masked
from ptyfast.physics import default_probe, raster_positions
from ptyfast.physics.objects import random_object
from ptyfast.physics.probe_family import HELD_OUT_KINDS, held_out_probe
from ptyfast.physics.simulate import detector_counts, simulate_scan


def ptyfast(*args, cwd):
    """The command run in this process (one import of the package for the whole file), in folder ``cwd``."""
    with contextlib.chdir(cwd):
        return runner.invoke(app, [str(a) for a in args])


def scan_with(probe, photons, seed=0, size=260):
    rng = np.random.default_rng(seed)
    obj = random_object((size, size), rng)
    pos = raster_positions(obj.shape, probe.shape, overlap=0.75, jitter=1.0, rng=rng)
    return simulate_scan(obj, probe, pos, photons=photons, noise=True, rng=rng)


@pytest.mark.parametrize("kind", ["bundled", *HELD_OUT_KINDS])
@pytest.mark.parametrize("photons", [1e3, 1e6, 1e8])
def test_clean_scans_lose_no_pixel(kind, photons):
    probe = default_probe() if kind == "bundled" else held_out_probe(kind, 1)
    scan = scan_with(probe, photons, seed=2)
    report = find_bad_pixels(np.asarray(scan.diffraction[:64]))
    assert report.n_bad == 0, report.counts


def test_real_star_loses_no_pixel(shared_file):
    scan = load_any(shared_file("tike-siemens-star/siemens-star-small.npz.bz2"))
    assert scan.meta["auto_mask"]["masked"] == 0, scan.meta["auto_mask"]
    assert scan.mask is None


def test_each_kind_of_bad_pixel_is_found_and_named():
    scan = scan_with(default_probe(), 1e6, seed=3)
    frames = np.asarray(scan.diffraction, np.float64)
    mean = frames.mean(axis=0)
    lit = np.argwhere((mean > 2) & (np.abs(np.indices(mean.shape) - 64).max(axis=0) > 8))
    dark = np.argwhere(mean < 0.05)
    (dy, dx), (hy, hx) = lit[0], dark[len(dark) // 2]
    frames[:, dy, dx] = 0  # dead where its neighbours count
    frames[:, hy, hx] += 500  # hot where its neighbours are dark
    counts, _ = detector_counts(frames, pinned=3e-4, dtype="uint32", rng=4)
    report = find_bad_pixels(counts[:64])
    pinned = (counts == np.iinfo(np.uint32).max).any(axis=0)
    assert report.counts["pinned"] == pinned.sum() >= 4
    assert report.counts["dead"] == 1 and report.bad[dy, dx]
    assert report.counts["hot"] == 1 and report.bad[hy, hx]
    assert report.n_bad == pinned.sum() + 2
    assert "pinned (at 4294967295, the uint32 maximum)" in report.summary() and "1 dead" in report.summary()


def test_beam_stop_and_saturation_are_named():
    scan = scan_with(default_probe(), 1e6, seed=5)
    stopped, _ = detector_counts(scan.diffraction, beamstop=5)
    report = find_bad_pixels(stopped[:64])
    yy, xx = np.indices((128, 128))
    disk = (yy - 64) ** 2 + (xx - 64) ** 2 <= 25
    assert report.counts["beam stop"] == disk.sum() and np.array_equal(report.bad, disk)
    clipped, _ = detector_counts(scan.diffraction, saturation=0.8 * float(np.max(scan.diffraction)))
    report = find_bad_pixels(clipped[:64])
    assert report.counts["saturated"] > 0 and 0 < report.saturated_share < 1
    assert np.array_equal(report.bad, (clipped[:64] == clipped[:64].max()).any(axis=0))


def test_fill_is_the_ring_by_ring_mean_of_valid_neighbours_and_reads_no_masked_value():
    rng = np.random.default_rng(0)
    frames = rng.random((5, 40, 40)).astype(np.float32)
    mask = np.ones((40, 40), bool)
    mask[10:17, 20:26] = False
    mask[0, 0] = mask[39, 5] = mask[3, 30] = False
    frames[:, ~mask] = np.nan  # a masked pixel may hold anything
    got = fill_masked(frames.copy(), mask)
    ref, valid = np.nan_to_num(frames), mask.copy()
    while not valid.all():
        weight = ndimage.convolve(valid.astype(np.float32), np.ones((3, 3), np.float32), mode="constant")
        ring = ~valid & (weight > 0)
        total = ndimage.convolve(ref * valid, np.ones((1, 3, 3), np.float32), mode="constant")
        ref[:, ring] = total[:, ring] / weight[ring]
        valid |= ring
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    np.testing.assert_array_equal(got[:, mask], frames[:, mask])


@pytest.fixture(scope="module")
def quirk_files(tmp_path_factory):
    """One clean scan and the same scan as a detector with pinned pixels, a beam stop and a clipped centre
    would record it (CXI files, no mask in them)."""
    folder = tmp_path_factory.mktemp("quirks")
    scan = scan_with(default_probe(), 1e6, seed=7, size=230)
    write_cxi(folder / "clean.cxi", scan)
    variants = {"pinned": dict(pinned=5e-4, dtype="uint32"), "beamstop": dict(beamstop=4),
                "clipped": dict(saturation=0.5 * float(np.max(scan.diffraction)))}
    for name, spec in variants.items():
        counts, _ = detector_counts(scan.diffraction, rng=1, **spec)
        write_cxi(folder / f"{name}.cxi", scan.with_(diffraction=counts))
    return folder


def phase_psnr(folder, name):
    scores = json.loads((folder / f"{name}.json").read_text())
    return scores["reconstruction"]["phase_psnr"]


@pytest.mark.slow
def test_pinned_pixels_and_beam_stop_reconstruct_as_well_as_clean(quirk_files):
    d = quirk_files
    for name in ("clean", "pinned", "beamstop"):
        r = ptyfast("reconstruct", f"{name}.cxi", "-o", f"{name}.h5", "--no-png", cwd=d)
        assert r.exit_code == 0, r.stderr
        assert ptyfast("evaluate", f"{name}.h5", "--truth", f"{name}.cxi", "--json", f"{name}.json",
                       cwd=d).exit_code == 0
        with h5py.File(d / f"{name}.h5", "r") as f:
            prov = json.loads(f.attrs["provenance"])
            stored = f["detector_mask"][()] if "detector_mask" in f else None
        if name == "clean":
            assert "pixels:" not in r.stdout and stored is None and prov["detector_mask"]["masked"] == 0
        else:
            assert "pixels: masked" in r.stdout and ("pinned" if name == "pinned" else "beam stop") in r.stdout
            assert stored is not None and int((stored == 0).sum()) == prov["detector_mask"]["masked"] > 0
            assert not prov["warnings"]
    clean = phase_psnr(d, "clean")
    assert phase_psnr(d, "pinned") > clean - 1.0
    assert phase_psnr(d, "beamstop") > clean - 1.0


@pytest.mark.slow
def test_unmasked_pinned_pixels_are_loud_and_strict_writes_nothing(quirk_files):
    d = quirk_files
    r = ptyfast("reconstruct", "pinned.cxi", "-o", "raw.h5", "--no-png", "--no-auto-mask", cwd=d)
    assert r.exit_code == 0 and "does not explain its data" in r.stderr and "bad detector pixels" in r.stderr
    with h5py.File(d / "raw.h5", "r") as f:
        prov = json.loads(f.attrs["provenance"])
    assert prov["explains_data"] is False and any("does not explain" in w for w in prov["warnings"])
    r = ptyfast("reconstruct", "pinned.cxi", "-o", "strict.h5", "--no-png", "--no-auto-mask", "--strict", cwd=d)
    one_error_line(r, "does not explain its data", code=1)
    assert not list(d.glob("strict*"))


def test_a_clipped_centre_is_refused_in_one_sentence(quirk_files):
    d = quirk_files
    r = ptyfast("reconstruct", "clipped.cxi", "-o", "clipped.h5", cwd=d)
    one_error_line(r, "saturate at")
    assert not list(d.glob("clipped.h5*")) and not list(d.glob("clipped_*.png"))


def test_info_and_convert_report_and_keep_the_found_pixels(quirk_files):
    d = quirk_files
    r = ptyfast("info", "pinned.cxi", cwd=d)
    assert r.exit_code == 0 and "found" in r.stdout and "pinned" in r.stdout
    r = ptyfast("convert", "pinned.cxi", "-o", "converted.cxi", cwd=d)
    assert r.exit_code == 0 and "pixels: masked" in r.stdout
    again = load_any(d / "converted.cxi")
    assert again.diffraction.dtype == np.uint32
    assert int((~again.mask).sum()) == load_any(d / "pinned.cxi").meta["auto_mask"]["masked"] > 0
    assert again.meta["auto_mask"]["masked"] == 0  # the file's own mask now holds them
    off = load_any(d / "pinned.cxi", auto_mask=False)
    assert off.mask is None and "auto_mask" not in off.meta


def test_signed_integer_markers_are_masked_and_float_negatives_still_refused(tmp_path):
    scan = scan_with(default_probe(), 1e6, seed=9, size=200)
    counts = np.rint(np.asarray(scan.diffraction)).astype(np.int32)
    counts[:, 10, 20] = -1  # a Pilatus-type gap marker
    for name, dtype in (("signed.cxi", np.int32), ("float.cxi", np.float32)):
        path = write_cxi(tmp_path / name, scan)
        with h5py.File(path, "a") as f:  # the frames as the detector stored them
            del f["entry_1/instrument_1/detector_1/data"]
            f["entry_1/instrument_1/detector_1/data"] = counts.astype(dtype)
    got = load_any(tmp_path / "signed.cxi")
    assert got.meta["auto_mask"]["reasons"] == {"pinned": 1} and not got.mask[10, 20]
    one_error_line(ptyfast("info", "float.cxi", cwd=tmp_path), "negative counts")
