"""Host emulation of CUDA kernels: a test harness that calls a kernel's per-thread code from plain C++, built with
nvcc into a shared library the tests load with ctypes (skipped when nvcc is not on PATH)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from ptyfast.kernels.loader import NVRTC_OPTIONS

NVCC = shutil.which("nvcc")


def host_library(folder: Path, harness: str, name: str, include: Path) -> ctypes.CDLL:
    """``harness`` (CUDA C++ including kernels from ``include``) built as ``folder/lib<name>.so`` and loaded."""
    if NVCC is None:
        pytest.skip(f"nvcc not on PATH: cannot build the host emulation ({name})")
    (folder / "harness.cu").write_text(harness)
    lib = folder / f"lib{name}.so"
    res = subprocess.run([NVCC, "-shared", "-Xcompiler", "-fPIC", "-arch=sm_90", *NVRTC_OPTIONS, f"-I{include}",
                          "-o", str(lib), str(folder / "harness.cu")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return ctypes.CDLL(str(lib))
