"""Inference backends: ONNX Runtime (fp32/int8), torch (fp32/bf16), auto selection and its reason, caches,
bad input. Real sessions on a seeded, randomly initialised PtyNet-S."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="making a checkpoint needs torch (the train extra)")
pytest.importorskip("onnxruntime")

from ptyfast.errors import InputError  # noqa: E402
from ptyfast.export.samples import simulated_patterns  # noqa: E402
from ptyfast.export.tensorrt_engine import gpu_info, tensorrt_version  # noqa: E402
from ptyfast.models import get_entry  # noqa: E402
from model_helpers import random_checkpoint  # noqa: E402
from ptyfast.runtime.backends import OnnxRuntimeBackend, TorchBackend, open_backend  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "s.pt", seed=1)[0]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PTYFAST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def x():
    return simulated_patterns(6, get_entry("ptynet-s").manifest(), seed=4)


def test_auto_on_cpu_picks_onnxruntime_and_says_why(ckpt, x, cache):
    backend, reason = open_backend(ckpt)
    assert isinstance(backend, OnnxRuntimeBackend) and backend.device == "cpu"
    if gpu_info() is None:
        assert reason.startswith("onnxruntime-cpu: no CUDA device")
    if tensorrt_version() is None:
        assert "tensorrt not installed" in reason
    amp, phase = backend(x)
    assert amp.shape == phase.shape == (6, 128, 128) and amp.dtype == phase.dtype == np.float32
    assert 0 <= amp.min() and amp.max() <= 1 and np.abs(phase).max() <= np.pi
    # the checkpoint was exported once into the cache, keyed by its hash
    (cached,) = cache.glob("onnx/*/ptynet-s.onnx")
    assert backend.model_path == cached
    _, _ = open_backend(ckpt, device="cpu")
    assert list(cache.glob("onnx/*/ptynet-s.onnx")) == [cached]
    backend.close()


def test_backends_agree(ckpt, x):
    ort32, _ = open_backend(ckpt, "onnxruntime", "cpu", "fp32")
    t32, reason = open_backend(ckpt, "torch", "cpu", "fp32")
    assert isinstance(t32, TorchBackend) and reason.startswith("torch-cpu")
    a, b = ort32(x), t32(x)
    assert max(float(np.abs(p - q).max()) for p, q in zip(a, b)) < 1e-5
    bf16, _ = open_backend(ckpt, "torch", "cpu", "bf16")
    c = bf16(x)
    assert float(np.abs(c[0] - b[0]).max()) < 2e-2 and float(np.abs(c[1] - b[1]).max()) < 0.1


def test_int8_backend_is_cached_and_close(ckpt, x, cache):
    q, reason = open_backend(ckpt, "auto", "cpu", "int8")
    assert q.precision == "int8" and reason.startswith("onnxruntime-cpu")
    (made,) = cache.glob("int8/*/ptynet-s.int8.onnx")
    stamp = made.stat().st_mtime_ns
    q2, _ = open_backend(ckpt, "onnxruntime", "cpu", "int8")
    assert q2.model_path == made and made.stat().st_mtime_ns == stamp
    ref, _ = open_backend(ckpt, "onnxruntime", "cpu", "fp32")
    a, b = q(x), ref(x)
    assert float(np.abs(a[0] - b[0]).max()) < 0.05 and float(np.abs(a[1] - b[1]).max()) < 0.2


def test_bf16_auto_goes_to_torch_with_reason(ckpt):
    backend, reason = open_backend(ckpt, precision="bf16", device="cpu")
    assert backend.name == "torch" and "onnxruntime has no bf16" in reason


def test_bad_requests(ckpt, x, tmp_path):
    backend, _ = open_backend(ckpt, "onnxruntime", "cpu")
    with pytest.raises(InputError, match=r"expects a \(B, 1, 128, 128\) batch"):
        backend(x[:, 0])
    with pytest.raises(InputError, match=r"expects a \(B, 1, 128, 128\) batch"):
        backend(np.zeros((2, 1, 64, 64), np.float32))
    assert backend(x[:0])[0].shape == (0, 128, 128)
    with pytest.raises(InputError, match="unknown backend"):
        open_backend(ckpt, "openvino")
    with pytest.raises(InputError, match="unknown precision"):
        open_backend(ckpt, precision="int4")
    with pytest.raises(InputError, match="ONNX Runtime runs"):
        open_backend(ckpt, "onnxruntime", precision="bf16")
    with pytest.raises(InputError, match="torch backend runs"):
        open_backend(ckpt, "torch", "cpu", "int8")
    if gpu_info() is None:
        with pytest.raises(InputError, match="no NVIDIA GPU is visible"):
            open_backend(ckpt, device="cuda")
    if tensorrt_version() is None:
        with pytest.raises(InputError, match="TensorRT is not installed"):
            open_backend(ckpt, "tensorrt")
    onnx_only, _ = open_backend(ckpt, "onnxruntime", "cpu")
    with pytest.raises(InputError, match="needs a .pt checkpoint"):
        open_backend(onnx_only.model_path, "torch")


def test_onnxruntime_backend_does_not_import_torch(ckpt, cache):
    """Opening an exported model with ONNX Runtime (explicit and auto) never imports torch."""
    fp32, _ = open_backend(ckpt, "onnxruntime", "cpu")
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from ptyfast.runtime.backends import open_backend
        for kind, precision in (("onnxruntime", "fp32"), ("auto", "fp32"), ("auto", "int8")):
            b, reason = open_backend({str(fp32.model_path)!r}, kind, "cpu", precision)
            b(np.zeros((2, 1, 128, 128), np.float32))
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_both_onnxruntime_packages_is_one_sentence():
    from ptyfast.runtime.backends import onnxruntime_conflict

    assert onnxruntime_conflict([("onnxruntime", "1.20.0")]) is None
    msg = onnxruntime_conflict([("onnxruntime", "1.20.0"), ("onnxruntime-gpu", "1.20.0")])
    assert "pip uninstall" in msg and msg.count(".") >= 1 and "\n" not in msg
    assert onnxruntime_conflict() is None  # this environment has one of them
