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
from ptyfast.machine import cpu_flags  # noqa: E402
from ptyfast.runtime import backends  # noqa: E402
from ptyfast.runtime.backends import AUTO_BF16_FRAMES, OnnxRuntimeBackend, TorchBackend, open_backend  # noqa: E402

BF16_CPU = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
needs_bf16_cpu = pytest.mark.skipif(not BF16_CPU, reason="this CPU has neither AVX-512 BF16 nor AMX")


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device visible to torch")
def test_auto_on_a_gpu_without_onnxruntime_cuda_runs_torch_there_for_a_long_scan(ckpt, x):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers() or tensorrt_version() is not None:
        pytest.skip("ONNX Runtime's CUDA provider or TensorRT is installed: auto picks those first")
    short, why = open_backend(ckpt, frames=backends.AUTO_TORCH_CUDA_FRAMES - 1)
    assert isinstance(short, OnnxRuntimeBackend) and short.device == "cpu" and "no CUDA provider" in why
    assert "too few to repay torch-cuda's start-up" in why, why
    long, why = open_backend(ckpt, frames=backends.AUTO_TORCH_CUDA_FRAMES)
    assert isinstance(long, TorchBackend) and long.device == "cuda" and why.startswith("torch-cuda: "), why
    a, b = short(x), long(x)  # "fp32" on both; cuDNN convolutions run TF32 by default (10-bit mantissa)
    assert float(np.abs(a[0] - b[0]).max()) < 1e-2 and float(np.abs(a[1] - b[1]).max()) < 5e-2
    short.close()
    long.close()


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


def test_auto_precision_on_a_short_scan_stays_on_onnxruntime_and_says_why(ckpt):
    b, reason = open_backend(ckpt, precision="auto", device="cpu", frames=AUTO_BF16_FRAMES - 1)
    assert b.name == "onnxruntime" and b.precision == "fp32"
    assert ("too few to repay torch's start-up" if BF16_CPU else "neither AVX-512 BF16 nor AMX") in reason
    _, reason = open_backend(ckpt, precision="auto", device="cpu")
    assert ("the number of frames is unknown" if BF16_CPU else "neither AVX-512 BF16 nor AMX") in reason


@needs_bf16_cpu
def test_auto_precision_on_a_long_scan_runs_bf16_checked_against_fp32(ckpt, x):
    b, reason = open_backend(ckpt, precision="auto", device="cpu", frames=AUTO_BF16_FRAMES)
    assert b.name == "torch" and b.precision == "bf16", reason
    assert f"{AUTO_BF16_FRAMES:,} frames" in reason and "of fp32" in reason
    ref, _ = open_backend(ckpt, "torch", "cpu", "fp32")
    (a16, p16), (a32, p32) = b(x), ref(x)
    assert np.abs(a16 - a32).max() < 0.05 and np.abs(np.angle(np.exp(1j * (p16 - p32)))).max() < 0.1
    requested, reason = open_backend(ckpt, "torch", "cpu", "auto")  # any length once torch is asked for
    assert requested.precision == "bf16" and reason.startswith("torch-cpu bf16: requested backend")


@needs_bf16_cpu
def test_auto_precision_falls_back_to_fp32_when_bf16_disagrees(ckpt, monkeypatch):
    monkeypatch.setattr(backends, "BF16_TOLERANCE", 0.0)  # any difference at all is too much
    b, reason = open_backend(ckpt, precision="auto", device="cpu", frames=10 * AUTO_BF16_FRAMES)
    assert b.name == "onnxruntime" and b.precision == "fp32" and "bf16 differs from fp32 by" in reason
    b, reason = open_backend(ckpt, "torch", "cpu", "auto")
    assert b.name == "torch" and b.precision == "fp32" and "bf16 differs from fp32 by" in reason


def test_shipped_model_bf16_agrees_with_fp32():
    from ptyfast.models.pretrained import resolve_model

    b = TorchBackend(resolve_model(None).checkpoint, precision="bf16")
    error = backends.bf16_agreement(b)
    assert error is not None and 0 < error < backends.BF16_TOLERANCE / 2  # measured 0.005


@pytest.mark.parametrize("env", [{}, {"MALLOC_TRIM_THRESHOLD_": "131072"}])
def test_freed_memory_is_kept_unless_the_user_set_malloc(env):
    """glibc's malloc keeps freed memory (no fresh pages per torch batch), unless the environment says otherwise."""
    import os

    script = ("from ptyfast.allocator import keep_freed_memory; a = keep_freed_memory(); "
              "print(a, keep_freed_memory() is a)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env={**clean, **env})
    import platform

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert out.returncode == 0 and out.stdout.split() == [str(glibc and not env), "True"], out.stderr


def test_bad_requests(ckpt, x, tmp_path):
    backend, _ = open_backend(ckpt, "onnxruntime", "cpu")
    with pytest.raises(InputError, match=r"expects a \(B, 1, 128, 128\) batch"):
        backend(x[:, 0])
    with pytest.raises(InputError, match=r"expects a \(B, 1, 128, 128\) batch"):
        backend(np.zeros((2, 1, 64, 64), np.float32))
    assert backend(x[:0])[0].shape == (0, 128, 128)
    with pytest.raises(InputError, match="unknown backend"):
        open_backend(ckpt, "openvino")
    with pytest.raises(InputError, match="unknown precision 'int4'; choose auto, fp32"):
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
        for kind, precision in (("onnxruntime", "fp32"), ("auto", "fp32"), ("auto", "int8"), ("auto", "auto")):
            b, reason = open_backend({str(fp32.model_path)!r}, kind, "cpu", precision, frames=10**6)
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


def test_cpu_streams_split_the_threads():
    assert backends.cpu_streams(1) == (1, 1) and backends.cpu_streams(2) == (2, 1)
    assert backends.cpu_streams(backends.MAX_STREAMS) == (backends.MAX_STREAMS, 1)
    assert backends.cpu_streams(16) == (8, 2) and backends.cpu_streams(20) == (6, 3)


@pytest.mark.parametrize("name", ["onnxruntime", "torch"])
def test_streams_run_batches_side_by_side_in_order_with_the_same_outputs(ckpt, name):
    """Two streams: ``map`` returns every batch's outputs in order, equal to one stream's; one large call is
    split over the streams and equals the batch run whole; a caller that stops early leaves no work behind."""
    x = simulated_patterns(10, get_entry("ptynet-s").manifest(), seed=6)
    one, _ = open_backend(ckpt, name, "cpu", "fp32", threads=1)
    two, _ = open_backend(ckpt, name, "cpu", "fp32", threads=2)
    assert (one.streams, two.streams) == (1, 2)
    batches = [x[s : s + 3] for s in range(0, len(x), 3)]  # 3, 3, 3, 1
    want = [one(b) for b in batches]
    got = list(two.map(iter(batches)))
    assert len(got) == len(want)
    for (a, p), (b, q) in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(p, q, atol=1e-5)
    whole = two(x)
    np.testing.assert_allclose(whole[0], np.concatenate([a for a, _ in want]), atol=1e-5)
    outputs = two.map(iter(batches))
    next(outputs)
    outputs.close()  # stopped early: the batches already running finish, the rest never start
    assert two(x[:1])[0].shape == (1, 128, 128)
    two.close()
    one.close()


def test_torch_cpu_start_up_is_cached_on_disk_and_survives_a_broken_entry(ckpt, x, cache):
    first = TorchBackend(ckpt, precision="fp32")
    assert first.note is None and not first.cached
    (entry,) = cache.glob("torch/s-float32-*.ts")
    again = TorchBackend(ckpt, precision="fp32")
    assert again.cached and again.note is None
    (a0, p0), (a1, p1) = first(x), again(x)
    np.testing.assert_allclose(a1, a0, atol=1e-6)
    np.testing.assert_allclose(p1, p0, atol=1e-6)
    entry.write_bytes(b"not a TorchScript archive")  # a truncated or foreign entry: traced again and replaced
    mended = TorchBackend(ckpt, precision="fp32")
    assert not mended.cached and mended.note is None and entry.stat().st_size > 1000
    np.testing.assert_allclose(mended(x)[0], a0, atol=1e-6)
    other = random_checkpoint(cache.parent / "other.pt", seed=2)[0]  # another model never loads this entry
    assert not TorchBackend(other, precision="fp32").cached


def test_bf16_agreement_is_computed_once_per_model_and_machine(ckpt, cache):
    from ptyfast.runtime.backends.bf16_check import bf16_agreement
    from ptyfast.runtime.backends.torch_cache import cached_agreement

    b = TorchBackend(ckpt, precision="bf16")
    calls = []

    def counted(backend):
        calls.append(1)
        return bf16_agreement(backend)

    value, before = cached_agreement(b, counted)
    assert not before and value is not None and 0 <= value < 1
    again, before = cached_agreement(b, counted)
    assert before and again == value and len(calls) == 1


def test_torch_cache_in_an_unwritable_place_is_skipped(ckpt, x, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("PTYFAST_CACHE", str(blocker / "cache"))  # below a file: cannot be created
    b = TorchBackend(ckpt, precision="fp32")
    assert not b.cached and b.note is None and b(x)[0].shape == (6, 128, 128)
