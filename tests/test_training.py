"""Supervised training really learns (tiny CPU run), resumes, and runs under torchrun with 2 processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ptyfast.models.checkpoint import load_checkpoint, read_checkpoint  # noqa: E402
from ptyfast.physics.probe import fresnel_probe  # noqa: E402
from ptyfast.training.data import DataOptions  # noqa: E402
from ptyfast.training.train import TrainOptions, train  # noqa: E402

PROBE = fresnel_probe((32, 32), pixel_size=1e-6 / 32, focus_size=150e-9, defocus=200e-6, photons=1e4)


def tiny_options(**kw) -> TrainOptions:
    base = dict(model="ptynet-s", steps=80, batch=16, lr=2e-3, lr_min=2e-4, schedule="onecycle", val_every=40,
                val_size=64, seed=0, threads=2,
                data=DataOptions(object_size=72, pool_size=12, procedural_fraction=1.0))
    base.update(kw)
    return TrainOptions(**base)


def test_tiny_training_lowers_the_validation_loss(tmp_path):
    # Heads start at 0.5 / 0 rad (no bias initialisation), far from the data: training must close that gap.
    result = train([], tmp_path / "run", tiny_options(init_bias=False), probe=PROBE)
    history = result["history"]
    first, last = history[0][2], history[-1][2]
    assert history[0][0] == 0 and history[-1][0] == 80
    assert last < 0.6 * first, history
    model, manifest = load_checkpoint(tmp_path / "run" / "best.pt")
    assert manifest.architecture == "ptynet-s" and manifest.input_size == (32, 32)
    assert manifest.training["steps"] > 0 and manifest.training["best_val_loss"] <= last + 1e-9


def test_resume_continues_from_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    train([], run, tiny_options(steps=40, schedule="cyclic", cycle_steps=20), probe=PROBE)
    assert read_checkpoint(run / "last.pt")["step"] == 40
    result = train([], run, tiny_options(steps=60, schedule="cyclic", cycle_steps=20), probe=PROBE, resume=True)
    ck = read_checkpoint(run / "last.pt")
    assert ck["step"] == 60 and result["steps"] == 60
    assert [h[0] for h in ck["history"]] == [0, 40, 60]


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    probe_file = tmp_path / "probe.npy"
    np.save(probe_file, PROBE)
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "ptyfast", "train", "-o", str(tmp_path / "ddp"),
           "--steps", "10", "--batch", "4", "--val-every", "5", "--val-size", "16", "--object-size", "72",
           "--pool-size", "4", "--procedural", "1", "--probe", str(probe_file), "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    ck = read_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ck["step"] == 10
    manifest = load_checkpoint(tmp_path / "ddp" / "best.pt")[1]
    assert manifest.training["processes"] == 2 and manifest.training["batch"] == 8


def test_cli_rejects_unreadable_image(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_text("not an image")
    res = subprocess.run([sys.executable, "-m", "ptyfast", "train", str(bad), "-o", str(tmp_path / "r"), "--steps", "1"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "could not be read" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "r" / "best.pt").exists()


def test_cli_rejects_output_under_a_file(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("x")
    res = subprocess.run([sys.executable, "-m", "ptyfast", "train", "-o", str(blocker / "run"), "--steps", "1"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "cannot create output folder" in res.stderr and "Traceback" not in res.stderr


def test_cli_rejects_unknown_model(tmp_path):
    res = subprocess.run([sys.executable, "-m", "ptyfast", "train", "-o", str(tmp_path / "r"), "--model", "resnet"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "unknown model 'resnet'" in res.stderr
