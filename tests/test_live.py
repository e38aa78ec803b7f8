"""reconstruct --follow on files that are still being written (HDF5 SWMR): real writer processes
(``ptyfast simulate --stream``, a crashed writer, a non-SWMR writer), real polling, the offline result as the
reference."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from cli_helpers import one_error_line

pytest.importorskip("onnxruntime")

SIM = ["simulate", "--random-object", "--size", "340", "--seed", "4"]  # 49 frames of 128²


def ptyfast(*args):
    return [sys.executable, "-m", "ptyfast", *map(str, args)]


def run(*args, timeout=300):
    return subprocess.run(ptyfast(*args), capture_output=True, text=True, timeout=timeout)


def _object(path):
    with h5py.File(path, "r") as f:
        return f["object"][()], json.loads(f.attrs["provenance"])


def _wait_for(path, timeout=60):
    t = time.monotonic()
    while not path.exists():
        assert time.monotonic() - t < timeout, f"{path} never appeared"
        time.sleep(0.02)


def _same(a, b):
    """Equal amplitude (to 1e-5 of its maximum) and equal phase (to 1e-5 rad, no offset removed; measured 3e-8 rad
    here) wherever the object is lit (amplitude ≥ 10 % of its maximum: the phase of the unlit grid means
    nothing)."""
    assert a.shape == b.shape
    assert np.max(np.abs(np.abs(a) - np.abs(b))) <= 1e-5 * np.max(np.abs(a))
    lit = np.abs(a) >= 0.1 * np.max(np.abs(a))
    assert lit.sum() > 0.5 * lit.size
    dphi = np.abs(np.angle(a[lit] * np.conj(b[lit])))
    assert dphi.max() <= 1e-5, (dphi.max(), np.median(dphi))


@pytest.mark.quality
def test_follow_a_scan_being_written_gives_the_offline_result(tmp_path):
    live, out = tmp_path / "live.cxi", tmp_path / "live_recon.h5"
    writer = subprocess.Popen(ptyfast(*SIM, "-o", live, "--stream", 12), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    paused = False
    try:
        _wait_for(live)
        follower = subprocess.Popen(ptyfast("reconstruct", live, "--follow", "-o", out, "--refresh-seconds", 0.5,
                                            "--idle-timeout", 30), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        # The writer is stopped (SIGSTOP) a second into the scan until the follower has written a partial result
        # (or for 25 s at most, within its 30 s idle timeout): a follower slow to start on a loaded machine would
        # otherwise first refresh after the 4 s scan had ended, and the test would see no partial refresh.
        time.sleep(1.0)
        writer.send_signal(signal.SIGSTOP)
        paused, t_paused = True, time.monotonic()
        seen = set()  # frame counts of the refreshed outputs, read while the scan grows
        while follower.poll() is None:
            if out.exists():
                try:
                    _, prov = _object(out)  # every version a reader can open is complete
                    seen.add((prov["frames"], prov["live"]["complete"]))
                except OSError:  # replaced between our exists() and open(): the rename is atomic, retry
                    pass
            if paused and (any(not complete for _, complete in seen) or time.monotonic() - t_paused > 25):
                writer.send_signal(signal.SIGCONT)
                paused = False
            time.sleep(0.05)
        stdout, stderr = follower.communicate()
        assert follower.returncode == 0, stderr
        assert writer.wait(60) == 0
    finally:
        if paused:
            writer.send_signal(signal.SIGCONT)
        writer.kill()
    assert "the writer marked the scan complete" in stdout
    assert any(not complete and n < 49 for n, complete in seen), seen  # refreshed while it was written
    assert (tmp_path / "live_recon_phase.png").is_file()
    followed, prov = _object(out)
    assert prov["frames"] == 49 and prov["live"] == {"ended": "the writer marked the scan complete", "complete": True}
    assert prov["timings_s"]["consistency"] > 0
    res = run("reconstruct", live, "-o", tmp_path / "offline.h5", "--no-png")
    assert res.returncode == 0, res.stderr
    _same(_object(tmp_path / "offline.h5")[0], followed)


def test_writer_that_stops_without_closing_ends_by_the_idle_timeout(tmp_path):
    live, out = tmp_path / "crashed.cxi", tmp_path / "crashed_recon.h5"
    res = run(*SIM, "-o", live, "--stream", 50, "--stream-stop-after", 20)  # exits without closing the file
    assert res.returncode == 0, res.stderr
    t = time.monotonic()
    res = run("reconstruct", live, "--follow", "-o", out, "--idle-timeout", 1.5, "--no-png")
    assert res.returncode == 0, res.stderr
    assert 1.5 <= time.monotonic() - t < 60
    assert "no new frame for 1.5 s" in res.stderr and "20 frames received" in res.stderr
    followed, prov = _object(out)
    assert prov["frames"] == 20 and prov["live"]["complete"] is False
    assert np.all(np.isfinite(followed)) and prov["timings_s"]["consistency"] > 0
    # the same 20 frames, from the same simulation written normally, reconstructed offline
    full = tmp_path / "full.cxi"
    assert run(*SIM, "-o", full).returncode == 0
    res = run("reconstruct", full, "--frames", "0:20", "-o", tmp_path / "offline.h5", "--no-png")
    assert res.returncode == 0, res.stderr
    _same(_object(tmp_path / "offline.h5")[0], followed)
    # offline reading of the unclosed file says what it is and what to do
    res = run("reconstruct", live, "-o", tmp_path / "x.h5")
    assert res.returncode == 2 and "still open for writing" in res.stderr and "--follow" in res.stderr


WRITER_NO_FRAMES = """
import sys, time, h5py
f = h5py.File(sys.argv[1], "w", libver="latest")
f.create_dataset("entry_1/instrument_1/detector_1/data", shape=(0, 128, 128), maxshape=(None, 128, 128),
                 chunks=(1, 128, 128), dtype="f4")
f.create_dataset("entry_1/sample_1/geometry_1/translation", shape=(0, 3), maxshape=(None, 3), dtype="f8",
                 chunks=(64, 3))
f.swmr_mode = True
print("ready", flush=True)
time.sleep(60)
"""

WRITER_NOT_SWMR = """
import sys, time, h5py, numpy as np
f = h5py.File(sys.argv[1], "w")
f["entry_1/instrument_1/detector_1/data"] = np.zeros((2, 128, 128), "f4")
f.flush()
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("script, message", [(WRITER_NO_FRAMES, "no frame arrived"),
                                             (WRITER_NOT_SWMR, "could not open")],
                         ids=["never-grows", "not-swmr-readable"])
def test_follow_gives_up_with_one_sentence(tmp_path, script, message):
    live, out = tmp_path / "bad.cxi", tmp_path / "bad_recon.h5"
    writer = subprocess.Popen([sys.executable, "-c", script, str(live)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        res = run("reconstruct", live, "--follow", "-o", out, "--idle-timeout", 1)
    finally:
        writer.kill()
    one_error_line(res, message)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.cxi"]


def test_follow_refuses_what_it_cannot_do(tmp_path):
    a = tmp_path / "a.cxi"
    assert run(*SIM, "-o", a).returncode == 0
    for extra in (["--frames", "0:10"], [a], ["--refine", "rpie"]):
        res = run("reconstruct", a, *extra, "--follow", "-o", tmp_path)
        assert res.returncode == 2 and "--follow" in res.stderr, res.stderr


def test_follow_on_a_finished_file_reconstructs_it(tmp_path):
    a = tmp_path / "done.cxi"
    assert run(*SIM, "-o", a).returncode == 0
    res = run("reconstruct", a, "--follow", "-o", tmp_path / "f.h5", "--no-png", "--idle-timeout", 30)
    assert res.returncode == 0 and "the writer closed the file" in res.stdout
    assert _object(tmp_path / "f.h5")[1]["frames"] == 49


def test_stream_writer_interrupted_leaves_no_file(tmp_path):
    import signal

    live = tmp_path / "s.cxi"
    writer = subprocess.Popen(ptyfast(*SIM, "-o", live, "--stream", 5), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    _wait_for(live)
    time.sleep(0.5)
    writer.send_signal(signal.SIGTERM)
    assert writer.wait(30) != 0
    assert list(tmp_path.iterdir()) == []


def test_stream_never_replaces_an_existing_file(tmp_path):
    live = tmp_path / "s.cxi"
    live.write_bytes(b"a scan the user keeps")
    one_error_line(run(*SIM, "-o", live, "--stream", 50), "exists")
    assert live.read_bytes() == b"a scan the user keeps" and list(tmp_path.iterdir()) == [live]


WRITER_THEN_NAN = """
import os, sys, time, h5py, numpy as np
from ptyfast.io.cxi import create_layout, translations
from ptyfast.physics.simulate import random_scan
scan = random_scan(340, 4)
frames, trans, pos = scan.diffraction, translations(scan), scan.positions
f = h5py.File(sys.argv[1], "w", libver="latest")
data, t, p = create_layout(f, scan, None)
f.swmr_mode = True
for i in range(30):
    if i == 25:  # the bad frames come only after a refresh was written (however slowly the follower started)
        t0 = time.monotonic()
        while not os.path.exists(sys.argv[2]) and time.monotonic() - t0 < 60:
            time.sleep(0.02)
    frame = frames[i] if i < 25 else np.full(frames[i].shape, np.nan, np.float32)
    for ds, row in ((data, frame), (t, trans[i]), (p, pos[i])):
        ds.resize(i + 1, axis=0)
        ds[i] = row
        ds.flush()
    time.sleep(0.1)
print("done", flush=True)
time.sleep(60)
"""


def test_follow_that_fails_midway_leaves_no_output(tmp_path):
    """Refreshed outputs are temporary until the final one is written: bad data arriving after a few refreshes
    is one sentence, exit 2, and removes them."""
    live, out = tmp_path / "bad.cxi", tmp_path / "bad_recon.h5"
    writer = subprocess.Popen([sys.executable, "-c", WRITER_THEN_NAN, str(live), str(out)], stdout=subprocess.PIPE,
                              text=True)
    try:
        _wait_for(live)
        follower = subprocess.Popen(ptyfast("reconstruct", live, "--follow", "-o", out, "--refresh-frames", 5,
                                            "--idle-timeout", 30), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        refreshed = False
        while follower.poll() is None:
            refreshed |= out.exists()
            time.sleep(0.02)
        stdout, stderr = follower.communicate()
    finally:
        writer.kill()
    assert refreshed, "no refresh was written before the bad frame"
    assert follower.returncode == 2 and "NaN" in stderr, stdout + stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.cxi"]


def test_kept_patches_grow_in_place_and_read_as_their_concatenation():
    from ptyfast.runtime.live import KeptPatches

    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((k, 4, 4)).astype(np.complex64) for k in (3, 300, 1, 600)]
    kept = KeptPatches()
    for i, b in enumerate(batches):
        kept.append(b)
        assert np.array_equal(kept.view(), np.concatenate(batches[: i + 1]))
    assert kept.count == 904 and kept.view().base is not None  # a view of the store, not a copy
