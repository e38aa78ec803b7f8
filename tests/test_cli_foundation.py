"""The foundation commands (simulate, info, convert) through Typer's CliRunner and as a real subprocess."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, one_error_line

from cli_helpers import app, runner
from ptyfast.io import read_cxi


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])




@pytest.fixture
def images(tmp_path):
    """Two different 8-bit PNG images and a byte-identical copy of the first."""
    from skimage import io

    rng = np.random.default_rng(5)
    paths = []
    for name in ("amp.png", "phase.png"):
        img = (rng.uniform(0, 255, (64, 64))).astype(np.uint8)
        io.imsave(tmp_path / name, img, check_contrast=False)
        paths.append(tmp_path / name)
    copy = tmp_path / "amp_copy.png"
    copy.write_bytes(paths[0].read_bytes())
    return paths + [copy]


def test_simulate_two_images(images, tmp_path):
    out = tmp_path / "sim.cxi"
    result = run("simulate", images[0], images[1], "-o", out, "--size", 300, "--overlap", 0.5, "--seed", 1)
    assert result.exit_code == 0, result.output
    scan = read_cxi(out)
    assert scan.truth.shape == (300, 300) and scan.frame_shape == (128, 128)
    assert scan.n_frames == 9  # steps 0, 64, 128 per axis inside 300 - 129
    assert scan.meta["object"] == "amplitude amp.png, phase phase.png" and scan.meta["noise"] is True
    frames = scan.frames(0, scan.n_frames)
    assert np.all(frames == np.round(frames))  # Poisson counts


def test_simulate_variants(images, tmp_path):
    out = tmp_path / "f.cxi"
    r = run("simulate", images[0], "-o", out, "--size", 260, "--path", "fermat", "--photons", 1e5, "--no-noise",
            "--jitter", 0)
    assert r.exit_code == 0, r.output
    scan = read_cxi(out)
    assert np.sum(np.abs(scan.probe) ** 2) == pytest.approx(1e5, rel=1e-4)
    assert scan.meta["path"] == "fermat" and "procedural phase" in scan.meta["object"]
    r = run("simulate", "--random-object", "-o", tmp_path / "r.cxi", "--size", 200)
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("args, fragment", [
    (("{0}", "{2}"), "two different images"),
    (("{0}", "{0}"), "two different images"),
    ((), "--random-object"),
    (("{0}", "--random-object"), "not both"),
    (("{0}", "{1}", "{2}"), "at most two images"),
    (("{0}", "--overlap", "1.5"), "overlap must be in [0, 1)"),
    (("{0}", "--size", "100"), "larger than the probe window"),
    (("{0}", "--photons", "-3"), "--photons"),
    (("{0}", "--probe", "missing.npy"), "does not exist"),
    (("{3}",), "could not be read"),
])
def test_simulate_bad_input(images, tmp_path, args, fragment):
    (tmp_path / "bad.png").write_text("not an image")
    paths = images + [tmp_path / "bad.png"]
    out = tmp_path / "out.cxi"
    size = () if "--size" in args else ("--size", 200)
    result = run("simulate", *[a.format(*paths) for a in args], "-o", out, *size)
    assert_one_line_error(result, fragment)
    assert not out.exists()


def test_info_and_convert(small_cxi, tmp_path):
    r = run("info", small_cxi)
    assert r.exit_code == 0, r.output
    for word in ("frames", "25 × 64×64", "far-field", "Σ|P|²", "3 bad", "overlap"):
        assert word in r.stdout
    out = tmp_path / "copy.cxi"
    r = run("convert", small_cxi, "-o", out)
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(read_cxi(out).positions, read_cxi(small_cxi).positions)
    assert_one_line_error(run("convert", small_cxi, "-o", small_cxi), "would overwrite an input")
    assert_one_line_error(run("convert", small_cxi, "-o", tmp_path / "no" / "x.cxi"), "does not exist")


def test_info_p25_reports_near_field(shared_file):
    r = run("info", shared_file("cdtools-p25-nearfield/PETRAIII_P25_Near_Field_Ptycho.cxi"))
    assert r.exit_code == 0, r.output
    assert "NEAR-field" in r.stdout and "1.12 m" in r.stdout and "200 × 100×100" in r.stdout


def test_bad_files_through_cli(bad_input, tmp_path):
    path, fragment = bad_input
    assert_one_line_error(run("info", path), fragment)
    out = tmp_path / "out" / "converted.cxi"
    out.parent.mkdir()
    assert_one_line_error(run("convert", path, "-o", out), fragment)
    assert list(out.parent.iterdir()) == []  # no output, no temporary file


@pytest.mark.parametrize("case", ["truncated", "nan", "count-mismatch"])
def test_subprocess_exit_code_and_single_line(case, make_cxi, tmp_path):
    from conftest import BAD_CASES

    build, fragment = BAD_CASES[case]
    bad = build(make_cxi, tmp_path)
    outdir = tmp_path / "out"
    outdir.mkdir()
    proc = subprocess.run([sys.executable, "-m", "ptyfast", "convert", str(bad), "-o", str(outdir / "o.cxi")],
                          capture_output=True, text=True, timeout=120)
    one_error_line(proc, fragment)
    assert list(outdir.iterdir()) == []
