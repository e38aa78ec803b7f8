"""reconstruct --handoff ptychi DIR: the network's result in Pty-Chi 2.2's own conventions.

The conventions are checked without Pty-Chi (its documented forward model written out in numpy must predict
the handed-off data as well as ptyfast's consistency pass says); a second test runs Pty-Chi itself when it is
importable here or ``PTYFAST_PTYCHI_PYTHON`` names an interpreter that has it (Pty-Chi pulls its own torch,
so it lives in its own venv), and otherwise skips saying so."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from cli_helpers import one_error_line

pytest.importorskip("onnxruntime")


def run(*args):
    return subprocess.run([sys.executable, "-m", "ptyfast", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def handed_off(tmp_path_factory):
    d = tmp_path_factory.mktemp("handoff")
    scan = d / "s.cxi"
    assert run("simulate", "--random-object", "--size", "300", "-o", scan).returncode == 0
    res = run("reconstruct", scan, "-o", d / "s.h5", "--no-png", "--handoff", "ptychi", d / "pc")
    assert res.returncode == 0, res.stderr
    return scan, d / "s.h5", d / "pc"


def test_handoff_follows_ptychi_conventions(handed_off):
    from ptyfast.io.cxi import read_cxi
    from ptyfast.kernels import gather

    scan_path, rec_path, folder = handed_off
    assert sorted(p.name for p in folder.iterdir()) == ["ptychi_init.h5", "run_ptychi.py"]
    with h5py.File(folder / "ptychi_init.h5", "r") as f:
        data, obj, probe, centres = f["data"][()], f["object"][()], f["probe"][()], f["positions_px"][()]
    with h5py.File(rec_path, "r") as f:
        eps = float(f["consistency"].attrs["error"])
    scan = read_cxi(scan_path, lazy=False)
    h, w = probe.shape[-2:]
    assert obj.ndim == 3 and probe.shape == (1, 1, h, w) and centres.shape == (scan.n_frames, 2)
    np.testing.assert_array_equal(data, np.fft.ifftshift(scan.diffraction, axes=(-2, -1)))  # DC at the corner
    # Pty-Chi's far field as documented: unnormalised fft2, no shift, of probe × object patch whose centre is
    # at positions_px (top-left = centre − (H − 1)/2) in the buffer
    patches = gather(obj[0], centres - (np.array([h, w]) - 1) / 2.0, (h, w))
    pred = np.abs(np.fft.fft2(probe[0, 0][None] * patches)) ** 2
    err = np.sum((np.sqrt(pred) - np.sqrt(data)) ** 2) / np.sum(data)
    assert err == pytest.approx(eps, rel=0.05, abs=1e-3)  # the same misfit as ptyfast's own forward model
    assert err < 0.05


def test_handoff_bad_input(handed_off, tmp_path):
    scan_path = handed_off[0]
    one_error_line(run("reconstruct", scan_path, "-o", tmp_path / "x.h5", "--handoff", "ptypy", tmp_path / "d"),
                   "unknown --handoff code 'ptypy'")
    (tmp_path / "file").write_text("")
    one_error_line(run("reconstruct", scan_path, "-o", tmp_path / "x.h5", "--handoff", "ptychi", tmp_path / "file"),
                   "give a folder")
    assert not (tmp_path / "x.h5").exists()


def _ptychi_python() -> str:
    try:
        import ptychi  # noqa: F401

        return sys.executable
    except Exception:
        pass
    candidate = os.environ.get("PTYFAST_PTYCHI_PYTHON")
    if candidate and subprocess.run([candidate, "-c", "import ptychi.api"], capture_output=True).returncode == 0:
        return candidate
    pytest.skip("Pty-Chi is not importable here and PTYFAST_PTYCHI_PYTHON names no interpreter that has it")


def test_ptychi_starts_lower_from_the_handoff(handed_off, tmp_path):
    python = _ptychi_python()
    script = handed_off[2] / "run_ptychi.py"
    losses = {}
    for name, extra in (("network", []), ("flat", ["--flat"])):
        res = subprocess.run([python, str(script), "--epochs", "2", *extra, "--output", str(tmp_path / f"{name}.h5")],
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
        losses[name] = json.loads(res.stdout.strip().splitlines()[-1])["loss"]
    assert len(losses["network"]) == 2
    assert losses["network"][0] < losses["flat"][0]  # its own default start: a unit object, the same probe


def test_handoff_refused_after_fitting_leaves_no_output(tmp_path):
    """--fit crop reconstructs 160² frames with the 128² model, but the hand-off needs the frames as measured:
    refused in one sentence, and the reconstruction it would have accompanied is not written either."""
    from scan_helpers import scan_160

    scan = scan_160(tmp_path / "s160.cxi")
    one_error_line(run("reconstruct", scan, "--fit", "crop", "--allow-probe-mismatch", "-o", tmp_path / "x.h5",
                       "--handoff", "ptychi", tmp_path / "pc"), "--handoff needs the frames as measured")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s160.cxi"]
