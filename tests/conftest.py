"""Shared fixtures: a small simulated scan (and its CXI file), and the optional ../shared/data folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(os.environ.get("PTYFAST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def shared_file():
    """``shared_file("tike-siemens-star/…")``: that file of ``../shared/data`` (or $PTYFAST_SHARED_DATA); the test
    is skipped when it is absent (a copy of the folder may hold only some of the data sets)."""
    def get(relative: str) -> Path:
        path = SHARED_DATA / relative
        if not path.is_file():
            pytest.skip(f"shared data file {path} is absent")
        return path

    return get


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


def _write_raw_cxi(path, data, translation, *, energy=None, wavelength=1e-10, distance=2.0, pixel=75e-6,
                   mask=None, probe=None, probe_path="entry_1/instrument_1/source_1/illumination", drop=()):
    """A CXI file written by hand with h5py (as foreign software would), for reader tests."""
    import h5py

    items = {
        "entry_1/instrument_1/detector_1/data": np.asarray(data),
        "entry_1/sample_1/geometry_1/translation": np.asarray(translation),
        "entry_1/instrument_1/detector_1/distance": distance,
        "entry_1/instrument_1/detector_1/x_pixel_size": pixel,
        "entry_1/instrument_1/detector_1/y_pixel_size": pixel,
        "entry_1/instrument_1/source_1/wavelength": wavelength,
        "entry_1/instrument_1/source_1/energy": energy,
        "entry_1/instrument_1/detector_1/mask": mask,
        probe_path: probe,
    }
    with h5py.File(path, "w") as f:
        f["cxi_version"] = 150
        for key, value in items.items():
            if value is not None and key not in drop:
                f[key] = value
        if "entry_1/instrument_1/detector_1/data" not in drop:
            f["entry_1/data_1/data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
    return Path(path)


@pytest.fixture
def make_cxi(tmp_path):
    """Factory ``make_cxi(name, **changes)``: a valid foreign-style CXI (8 frames 16², metre translations) with
    ``changes`` applied (``data=``, ``translation=``, ``drop=(paths,)``, ``mask=``, ``probe=``, ...)."""
    rng = np.random.default_rng(3)

    def make(name: str = "raw.cxi", **changes) -> Path:
        n = 8
        args = dict(
            data=rng.poisson(5.0, size=(n, 16, 16)).astype(np.float32),
            translation=np.c_[rng.uniform(-1e-6, 1e-6, size=(n, 2)), np.zeros(n)],
        )
        args.update(changes)
        return _write_raw_cxi(tmp_path / name, **args)

    return make


def _truncated(make_cxi, tmp_path):
    good = make_cxi("good.cxi").read_bytes()
    bad = tmp_path / "trunc.cxi"
    bad.write_bytes(good[: len(good) // 3])
    return bad


# Bad inputs: case name → (builder(make_cxi, tmp_path) → path, expected message fragment). Every test that asks for
# the ``bad_input`` fixture runs once per case (see pytest_generate_tests).
BAD_CASES = {
    "not-hdf5": (lambda mk, tp: (tp / "text.cxi").write_text("hello") and tp / "text.cxi", "not an HDF5"),
    "truncated": (_truncated, "truncated or corrupt"),
    "no-data": (lambda mk, tp: mk(drop=("entry_1/instrument_1/detector_1/data",)), "entry_1/data_1/data"),
    "no-translation": (lambda mk, tp: mk(drop=("entry_1/sample_1/geometry_1/translation",)),
                       "entry_1/sample_1/geometry_1/translation"),
    "no-distance": (lambda mk, tp: mk(drop=("entry_1/instrument_1/detector_1/distance",)), "detector_1/distance"),
    "count-mismatch": (lambda mk, tp: mk(translation=np.zeros((5, 3))), "8 diffraction frames but 5"),
    "nan": (lambda mk, tp: mk(data=np.where(np.arange(8)[:, None, None] == 6, np.nan, 1.0) * np.ones((8, 16, 16))),
            "frame 6 contains NaN or Inf"),
    "inf": (lambda mk, tp: mk(data=np.full((8, 16, 16), np.inf)), "NaN or Inf"),
    "negative": (lambda mk, tp: mk(data=np.full((8, 16, 16), -1.0)), "negative counts"),
    "non-square": (lambda mk, tp: mk(data=np.ones((8, 16, 12))), "square frames"),
    "empty": (lambda mk, tp: mk(data=np.ones((0, 16, 16)), translation=np.zeros((0, 3))), "no diffraction frames"),
}


def pytest_generate_tests(metafunc):
    if "bad_case" in metafunc.fixturenames:
        metafunc.parametrize("bad_case", sorted(BAD_CASES))


@pytest.fixture
def bad_input(bad_case, make_cxi, tmp_path):
    """(path, expected message fragment) of one malformed input file, for each case in ``BAD_CASES``."""
    build, message = BAD_CASES[bad_case]
    return build(make_cxi, tmp_path), message
