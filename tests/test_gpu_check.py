"""The device check without a device: ``benchmarks/gpu_check.sh`` in its dry-run mode and
``benchmarks/gpu_pipeline.py --dry-run`` (the same code paths on the CPU at tiny sizes)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "benchmarks" / "gpu_check.sh"
PIPELINE = ROOT / "benchmarks" / "gpu_pipeline.py"
SECTIONS = ("env", "pipeline", "auto", "tests", "kernels", "bench", "refine", "demo", "suite", "train_calibrate",
            "train")
ITEMS = ("device_resident", "host_returning", "stitching", "end_to_end", "bad_input", "copy_to_host", "compile")


def _env(tmp_path: Path, **extra) -> dict:
    """This interpreter's environment first on PATH (the scripts call ``python3`` and ``ptyfast``), no GPU, one
    thread, the model cache in ``tmp_path``."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PTYFAST_CACHE=str(tmp_path / "cache"),
               **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for key in ("BUDGET", "OUT", "DRY_RUN"):
        if key not in extra:
            env.pop(key, None)
    return env


def _numbers(value, path="report"):
    """(path, number) of every int and float in a JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def test_gpu_check_parses():
    assert subprocess.run(["bash", "-n", str(CHECK)], capture_output=True).returncode == 0


def test_gpu_pipeline_without_a_gpu_says_so(tmp_path):
    p = subprocess.run([sys.executable, "-P", str(PIPELINE), "--device", "cuda"], capture_output=True, text=True,
                       env=_env(tmp_path), cwd=tmp_path, timeout=120)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "--dry-run" in p.stderr


def test_gpu_pipeline_dry_run_writes_finite_figures(tmp_path):
    out = tmp_path / "pipeline.json"
    p = subprocess.run([sys.executable, "-P", str(PIPELINE), "--dry-run", "--json", str(out)], capture_output=True,
                       text=True, env=_env(tmp_path), cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["small"] and report["device_name"].startswith("CPU")
    assert report["failures"] == [] and set(report["items"]) == set(ITEMS)
    items = report["items"]
    assert not any("error" in item for item in items.values())
    numbers = dict(_numbers(report))
    assert all(math.isfinite(v) for v in numbers.values()), {k: v for k, v in numbers.items() if not math.isfinite(v)}

    resident = items["device_resident"]
    for name in ("eager", "folded"):
        v = resident["variants"][name]
        assert v["patterns_per_s"] > 0 and v["equal"] and 0 <= v["difference_vs_fp32"] <= 0.02
    assert "CUDA" in resident["variants"]["folded_graph"]["skipped"]
    assert resident["best_patterns_per_s"] > 0 and resident["target_patterns_per_s"] == 100_000
    for row in items["host_returning"]["batches"].values():
        assert row["backend_patterns_per_s"] > 0 and row["pinned_folded_patterns_per_s"] > 0 and row["equal"]
    stitch = items["stitching"]
    assert stitch["array_module"] == "numpy" and stitch["equal"] and stitch["max_abs_difference"] <= 1e-4
    assert stitch["device_stitch_s"] > 0 and stitch["numpy_stitch_s"] > 0
    e2e = items["end_to_end"]
    assert e2e["median_ratio"] > 0 and e2e["finite_object"] and e2e["rounds"]
    no_gpu = items["bad_input"]["no_gpu"]
    assert no_gpu["ok"] and no_gpu["rc"] == 2 and no_gpu["one_sentence"] and no_gpu["written"] == []
    assert "skipped" in items["bad_input"]["out_of_memory"]
    for row in items["copy_to_host"]["batches"].values():
        assert row["fresh_cpu"]["s"] > 0 and row["reused_pageable"]["s"] > 0 and "skipped" in row["reused_pinned"]
    assert "skipped" in items["compile"]


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "out"
    before = (ROOT / "gpu-out").exists()
    p = subprocess.run(["bash", str(CHECK)], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                       env=_env(tmp_path, DRY_RUN="1", OUT=str(out)))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "=== summary" in p.stdout
    table = (out / "summary.txt").read_text().splitlines()
    assert "dry run" in table[0]
    rows = dict(line.split(None, 1) for line in table[1:])
    assert set(rows) == set(SECTIONS)
    assert all(v.startswith("rc=0 ") for v in rows.values()), rows
    with tarfile.open(out / "logs.tar.gz") as tar:
        logs = {Path(m.name).name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}
    for name in SECTIONS:
        assert logs[f"{name}.log"].startswith("dry run; on the GPU machine: "), name
    assert "gpu_pipeline.py --budget" in logs["pipeline.log"] and "device_resident:" in logs["pipeline.log"]
    assert "reconstruct_race.py --frames 1600 4096" in logs["auto.log"] and "usage:" in logs["auto.log"]
    assert "rate 2000" in logs["train.log"]
    assert json.loads(logs["gpu_pipeline.json"])["failures"] == []
    assert (out / "gpu_pipeline.json").is_file()
    assert (ROOT / "gpu-out").exists() == before


def test_gpu_check_skips_what_the_budget_cannot_hold(tmp_path):
    out = tmp_path / "out"
    p = subprocess.run(["bash", str(CHECK), "--dry-run", "env", "pipeline", "train"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300, env=_env(tmp_path, OUT=str(out), BUDGET="20"))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = dict(line.split(None, 1) for line in (out / "summary.txt").read_text().splitlines()[1:])
    assert rows == {name: "skipped (budget)" for name in ("env", "pipeline", "train_calibrate", "train")}
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"env.log", "pipeline.log", "train.log", "summary.txt"} <= names
