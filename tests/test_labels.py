"""Training on measured patterns labelled by a reference reconstruction (train --labels), --frames, and
refinement started from a network's result. Real HDF5 files, real training, the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from cli_helpers import assert_one_line_error
from cli_helpers import app, runner

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def labelled_case(tmp_path_factory):
    """A scan of a known object with the default probe (81 frames in 9 rows) and a reference file holding
    that object, as a refine output would (object, weight, origin, probe, positions)."""
    from ptyfast.io import write_cxi
    from ptyfast.kernels.numpy_twins import overlap_add
    from ptyfast.physics import raster_positions
    from ptyfast.io.images import held_out_object
    from ptyfast.physics.probe import default_probe
    from ptyfast.physics.simulate import simulate_scan

    d = tmp_path_factory.mktemp("labels")
    rng = np.random.default_rng(5)
    probe = default_probe()
    obj = held_out_object((384, 384))
    pos = raster_positions(obj.shape, probe.shape, overlap=0.75)
    scan = simulate_scan(obj, probe, pos, rng=rng)
    path = write_cxi(d / "scan.cxi", scan)
    weight = overlap_add(np.zeros(obj.shape, np.float32),
                         np.broadcast_to(np.abs(probe) ** 2, (len(pos),) + probe.shape), pos)
    ref = d / "truth_ref.h5"
    with h5py.File(ref, "w") as f:
        f["object"], f["weight"], f["origin"] = obj.astype(np.complex64), weight, np.zeros(2)
        f["probe"], f["positions"] = probe.astype(np.complex64), pos
    return d, path, ref, len(pos)


def test_train_on_labels_then_reconstruct_the_other_half(labelled_case):
    d, scan, ref, n = labelled_case
    half = 5 * 9  # whole rows: the upper five rows train, the lower four are never seen
    run_dir = d / "run"
    # by default the shipped model continues on the labels (half of each batch simulated): wrong or shifted
    # labels would wreck it within these steps
    r = run("train", scan, "--labels", ref, "--frames", f"0:{half}", "-o", run_dir, "--steps", "60",
            "--batch", "16", "--lr", "3e-4", "--val-every", "30", "--threads", "2")
    assert r.exit_code == 0, r.output
    assert "starting from the shipped ptynet-s.pt" in r.output and "half of each batch simulated" in r.output
    manifest = json.loads((run_dir / "best.json").read_text())
    assert manifest["training"]["labelled_frames_train"] == half - round(half * 0.1) and (run_dir / "probe.npy").is_file()
    assert manifest["refined_probe_sha256"] and (run_dir / "probe_refined.npy").is_file()
    out = d / "nn_lower.h5"
    r = run("reconstruct", scan, "--frames", f"{half}:{n}", "--model", run_dir / "best.pt", "-o", out, "--no-png")
    assert r.exit_code == 0, r.output
    assert "refined probe of the model's reference" in r.output
    r = run("evaluate", out, "--truth", scan, "--json", d / "q.json")
    assert r.exit_code == 0, r.output
    q = json.loads((d / "q.json").read_text())
    assert q["reconstruction"]["phase_psnr"] > q["flat"]["phase_psnr"] + 3, q
    assert q["reconstruction"]["amplitude_psnr"] > q["flat"]["amplitude_psnr"] + 3, q
    # refinement from the network's object (its grid origin and probe) beats the same iterations from flat
    r1 = run("refine", scan, "--frames", f"{half}:{n}", "--init", out, "-n", "3", "-o", d / "from_nn.h5", "--no-png")
    r2 = run("refine", scan, "--frames", f"{half}:{n}", "-n", "3", "-o", d / "from_flat.h5", "--no-png")
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    with h5py.File(d / "from_nn.h5") as a, h5py.File(d / "from_flat.h5") as b:
        assert a["errors"][0] < b["errors"][0] and a["errors"][-1] < b["errors"][-1]


def test_a_matching_scan_is_stitched_with_the_models_refined_probe(tmp_path):
    """A model trained on measured data carries its reference's refined probe: a scan whose own probe matches
    the training probe is checked with the refined one, scaled to the scan's probe power, and stitched with the
    |P|² of its own (the training probe's); a scan
    let through with --allow-probe-mismatch keeps its own, and so does any scan when the refined file does not
    match the manifest's hash."""
    from ptyfast.models.manifest import Manifest, probe_hash
    from ptyfast.physics.probe import default_probe
    from ptyfast.runtime.reconstruct import PROBE_FILE, REFINED_PROBE_FILE, choose_probe
    from ptyfast.scan import Scan

    p = default_probe()
    refined = np.roll(p, (2, 2), axis=(0, 1)) * np.exp(0.3j)
    np.save(tmp_path / PROBE_FILE, p)
    np.save(tmp_path / REFINED_PROBE_FILE, refined.astype(np.complex64))
    manifest = Manifest("ptynet-s", probe_sha256=probe_hash(p), refined_probe_sha256=probe_hash(refined.astype(np.complex64)))
    model = tmp_path / "best.pt"

    def scan_with(probe):
        return Scan(diffraction=np.ones((2, 128, 128), np.float32), positions=np.zeros((2, 2)), probe=probe)

    used, note, weights = choose_probe(scan_with(2 * p), manifest, fit="none", allow_mismatch=False, model_path=model)
    assert "refined probe" in note
    np.testing.assert_allclose(used, 2 * refined, rtol=1e-4, atol=1e-6)  # the scan's power, the refined shape
    np.testing.assert_array_equal(weights, (2 * p).astype(np.complex64))  # stitching weighted as trained
    other = np.roll(p, (40, 40), axis=(0, 1))
    used, note, weights = choose_probe(scan_with(other), manifest, fit="none", allow_mismatch=True, model_path=model)
    np.testing.assert_array_equal(used, other.astype(np.complex64))
    assert weights is None
    np.save(tmp_path / REFINED_PROBE_FILE, p)  # not the file the manifest names
    used, note, weights = choose_probe(scan_with(p), manifest, fit="none", allow_mismatch=False, model_path=model)
    assert "refined" not in note and weights is None
    np.testing.assert_array_equal(used, p.astype(np.complex64))


def test_frames_option_selects_and_refuses(labelled_case, tmp_path):
    _, scan, _, n = labelled_case
    r = run("info", scan, "--frames", "10:20")
    assert r.exit_code == 0 and "10 × 128×128" in r.stdout
    for bad, msg in (("5:2", "selects no frames"), ("a:b", "START:STOP"), ("0:10:0", "step"), (f"{n}", "frames 0 to"),
                     ("1:2:3:4", "START:STOP")):
        assert_one_line_error(run("info", scan, "--frames", bad), msg)
        assert_one_line_error(run("reconstruct", scan, "--frames", bad, "-o", tmp_path / "r.h5"), msg)


def test_label_errors(labelled_case, tmp_path):
    d, scan, ref, n = labelled_case
    out = tmp_path / "run"
    # a reference that covers only part of the object: frames outside it have no label
    part = tmp_path / "part.h5"
    with h5py.File(ref) as src, h5py.File(part, "w") as f:
        for k in src:
            f[k] = src[k][()]
        w = f["weight"][()]
        w[192:] = 0
        f["weight"][...] = w
    assert_one_line_error(run("train", scan, "--labels", part, "-o", out, "--steps", "1"), "does not cover")
    # a reference of another pattern size
    other = tmp_path / "other.h5"
    with h5py.File(ref) as src, h5py.File(other, "w") as f:
        for k in src:
            f[k] = src[k][()]
        del f["probe"]
        f["probe"] = np.ones((64, 64), np.complex64)
    assert_one_line_error(run("train", scan, "--labels", other, "-o", out, "--steps", "1"), "64×64 probe")
    # overlapping training and validation frames, an empty selection, unpaired scans and references
    assert_one_line_error(run("train", scan, "--labels", ref, "--frames", "0:50", "--val-frames", "40:60", "-o", out,
                              "--steps", "1"), "share 10 frames")
    assert_one_line_error(run("train", scan, "--labels", ref, "--frames", "9:9", "-o", out, "--steps", "1"),
                          "selects no frames")
    assert_one_line_error(run("train", scan, scan, "--labels", ref, "-o", out, "--steps", "1"), "one --labels")
    assert_one_line_error(run("train", "--frames", "0:5", "-o", out, "--steps", "1"), "with --labels only")
    assert not out.exists() or not any(out.glob("*.pt"))
    assert not out.exists()  # refused before the run folder is made


def test_an_unreadable_refined_probe_is_one_sentence(tmp_path):
    """A damaged probe_refined.npy beside a model is refused with one sentence naming it (the CLI's exit 2),
    not a traceback and not a silent fall-back."""
    from ptyfast.errors import InputError
    from ptyfast.models.manifest import Manifest, probe_hash
    from ptyfast.physics.probe import default_probe
    from ptyfast.runtime.reconstruct import PROBE_FILE, REFINED_PROBE_FILE, choose_probe
    from ptyfast.scan import Scan

    p = default_probe()
    np.save(tmp_path / PROBE_FILE, p)
    (tmp_path / REFINED_PROBE_FILE).write_bytes(b"\x93NUMPY truncated")
    manifest = Manifest("ptynet-s", probe_sha256=probe_hash(p), refined_probe_sha256="0" * 64)
    scan = Scan(diffraction=np.ones((2, 128, 128), np.float32), positions=np.zeros((2, 2)), probe=p)
    with pytest.raises(InputError, match="refined probe .* cannot be read") as err:
        choose_probe(scan, manifest, fit="none", allow_mismatch=False, model_path=tmp_path / "best.pt")
    assert "\n" not in str(err.value) and REFINED_PROBE_FILE in str(err.value)
