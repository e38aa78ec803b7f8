"""The install extras resolve from the package index (pip --dry-run: metadata only, no GPU wheel is
downloaded) and stay on one CUDA major version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = ("URLError", "ConnectionError", "NewConnectionError", "Temporary failure in name resolution",
           "Network is unreachable")


def dry_run(tmp_path, *requirements: str, no_deps: bool = False) -> dict:
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
           str(report), *(["--no-deps"] if no_deps else []), *requirements]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    if proc.returncode != 0 and any(s in proc.stdout + proc.stderr for s in OFFLINE):
        pytest.skip("the package index cannot be reached from this machine")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
            for i in json.loads(report.read_text())["install"]}


@pytest.mark.slow
def test_gpu_extra_resolves_without_the_cpu_onnxruntime(tmp_path):
    got = dry_run(tmp_path, ".[gpu]")
    assert "onnxruntime-gpu" in got and "cupy-cuda12x" in got
    assert "onnxruntime" not in got  # the CPU package would shadow the GPU one
    assert not any("cu13" in name or "cuda13" in name for name in got)


@pytest.mark.slow
def test_tensorrt_extra_is_the_cuda12_build(tmp_path):
    # its library wheels come from NVIDIA's index (documented), so resolve the package itself only
    got = dry_run(tmp_path, "tensorrt-cu12>=10", no_deps=True)
    assert "tensorrt-cu12" in got
    extras = (ROOT / "pyproject.toml").read_text()
    assert 'tensorrt = ["tensorrt-cu12' in extras and "tensorrt>=" not in extras
