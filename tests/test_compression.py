"""Compressed detector data: CXI files whose frames use the common HDF5 filters (through hdf5plugin) read
exactly; convert can write them; an undecodable filter is one sentence."""

from __future__ import annotations

import subprocess
import sys

import h5py
import hdf5plugin
import numpy as np
import pytest

from cli_helpers import assert_one_line_error
from cli_helpers import app, runner


FILTERS = {
    "bitshuffle-lz4": hdf5plugin.Bitshuffle(cname="lz4"),
    "lz4": hdf5plugin.LZ4(),
    "blosc-zstd": hdf5plugin.Blosc(cname="zstd", shuffle=hdf5plugin.Blosc.SHUFFLE),
    "blosc2": hdf5plugin.Blosc2(),
    "zstd": hdf5plugin.Zstd(),
    "gzip": {"compression": "gzip"},
}


def eiger_like(path, filt, frames):
    """A CXI file as a detector pipeline writes it: uint32 counts, one chunk per frame, compressed."""
    n = len(frames)
    with h5py.File(path, "w") as f:
        f.create_dataset("entry_1/instrument_1/detector_1/data", data=frames, chunks=(1,) + frames.shape[1:],
                         **dict(filt))
        f["entry_1/sample_1/geometry_1/translation"] = np.stack([np.arange(n) * 2e-8, np.zeros(n), np.zeros(n)], 1)
        f["entry_1/instrument_1/detector_1/distance"] = 2.0
        f["entry_1/instrument_1/detector_1/x_pixel_size"] = 75e-6
        f["entry_1/instrument_1/source_1/wavelength"] = 1e-10
    return path


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_compressed_frames_read_exactly(tmp_path, name):
    from ptyfast.io import load_any

    frames = np.random.default_rng(1).poisson(3.0, (6, 32, 32)).astype(np.uint32)
    path = eiger_like(tmp_path / f"{name}.cxi", FILTERS[name], frames)
    with h5py.File(path) as f:  # really compressed with that filter
        assert f["entry_1/instrument_1/detector_1/data"].id.get_create_plist().get_nfilters() >= 1
    scan = load_any(path)
    np.testing.assert_array_equal(scan.frames(0, 6), frames.astype(np.float32))


def test_cli_reads_compressed_data_in_a_fresh_process(tmp_path):
    """The filters are registered on the CLI's own import path (no test-side `import hdf5plugin`)."""
    frames = np.random.default_rng(2).poisson(3.0, (6, 32, 32)).astype(np.uint32)
    path = eiger_like(tmp_path / "eiger.cxi", FILTERS["bitshuffle-lz4"], frames)
    proc = subprocess.run([sys.executable, "-m", "ptyfast", "info", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "6 × 32×32" in proc.stdout


@pytest.mark.parametrize("name", ["bitshuffle-lz4", "zstd", "gzip"])
def test_convert_writes_compressed_cxi(tmp_path, small_cxi, name):
    from ptyfast.io import load_any

    out = tmp_path / f"c_{name}.cxi"
    r = runner.invoke(app, ["convert", str(small_cxi), "-o", str(out), "--compression", name])
    assert r.exit_code == 0, r.output
    a, b = load_any(small_cxi), load_any(out)
    np.testing.assert_array_equal(a.frames(0, a.n_frames), b.frames(0, b.n_frames))
    assert out.stat().st_size < small_cxi.stat().st_size


def test_bad_compression_name_and_undecodable_filter(tmp_path, small_cxi):
    assert_one_line_error(runner.invoke(app, ["convert", str(small_cxi), "-o", str(tmp_path / "x.cxi"),
                                              "--compression", "rar"]), "unknown compression")
    assert not (tmp_path / "x.cxi").exists()
    # a filter id nobody registers (HDF5 allows writing it as optional; reading needs the plugin)
    frames = np.ones((4, 16, 16), np.float32)
    path = tmp_path / "odd.cxi"
    with h5py.File(path, "w") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((1, 16, 16))
        dcpl.set_filter(32999, h5py.h5z.FLAG_OPTIONAL, ())
        space = h5py.h5s.create_simple(frames.shape)
        h5py.h5d.create(f.id, b"data", h5py.h5t.IEEE_F32LE, space, dcpl=dcpl)
        f["entry_1/instrument_1/detector_1/data"] = h5py.SoftLink("/data")
        f["entry_1/sample_1/geometry_1/translation"] = np.zeros((4, 3))
        f["entry_1/instrument_1/detector_1/distance"] = 2.0
        f["entry_1/instrument_1/detector_1/x_pixel_size"] = 75e-6
        f["entry_1/instrument_1/source_1/wavelength"] = 1e-10
    assert_one_line_error(runner.invoke(app, ["info", str(path)]), "filter 32999")


def test_bitshuffle_lz4_scan_reconstructs_identically(tmp_path):
    import h5py as _h5

    plain, packed = tmp_path / "plain.cxi", tmp_path / "packed.cxi"
    assert runner.invoke(app, ["simulate", "--random-object", "--size", "256", "-o", str(plain)]).exit_code == 0
    assert runner.invoke(app, ["convert", str(plain), "-o", str(packed), "--compression", "bitshuffle-lz4"]).exit_code == 0
    outs = []
    for src in (plain, packed):
        out = tmp_path / f"{src.stem}_recon.h5"
        r = runner.invoke(app, ["reconstruct", str(src), "-o", str(out), "--no-png"])
        assert r.exit_code == 0, r.output
        with _h5.File(out) as f:
            outs.append((f["object"][()], f["consistency/per_frame"][()]))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
