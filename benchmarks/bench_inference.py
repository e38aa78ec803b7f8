"""Model-only inference throughput of PtyNet-S (patterns/s at batch 128) per backend, in one run.

Run (not part of the plain test run)::

    PTYFAST_BENCH_THREADS=2 pytest benchmarks/bench_inference.py --benchmark-only \
        --benchmark-columns=mean,stddev,rounds -p no:cacheprovider -s

Each case prints ``patterns/s``; the INT8 case also prints the patch-level accuracy against fp32 (PSNR of
amplitude and phase over their manifest ranges). Weights: the shipped PtyNet-S when present, else a seeded
random initialisation (throughput does not depend on the weight values; accuracy figures do).
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("pytest_benchmark")

BATCH = 128
THREADS = int(os.environ.get("PTYFAST_BENCH_THREADS", "2"))


@pytest.fixture(scope="module")
def model_spec(tmp_path_factory):
    from ptyfast.models import build_model, get_entry
    from ptyfast.models.checkpoint import save_checkpoint
    from ptyfast.models.pretrained import shipped_models

    os.environ.setdefault("PTYFAST_CACHE", str(tmp_path_factory.mktemp("cache")))
    shipped = dict(shipped_models(include_missing=True)).get("ptynet-s")
    if shipped is not None and shipped.checkpoint is not None:
        return shipped
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("w") / "ptynet-s.pt", build_model("ptynet-s"),
                           get_entry("ptynet-s").manifest())


@pytest.fixture(scope="module")
def batch():
    from ptyfast.export.samples import simulated_patterns
    from ptyfast.models import get_entry

    return simulated_patterns(BATCH, get_entry("ptynet-s").manifest(), seed=0)


CASES = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("torch", "fp32"), ("torch", "bf16")]


@pytest.mark.parametrize("backend_name,precision", CASES, ids=[f"{b}-{p}" for b, p in CASES])
def test_model_throughput(benchmark, model_spec, batch, backend_name, precision):
    from ptyfast.runtime.backends import open_backend

    backend, _ = open_backend(model_spec, backend_name, "cpu", precision, threads=THREADS)
    backend(batch)  # warm-up (and the one-off INT8 quantisation / ONNX export happen before timing)
    benchmark.pedantic(backend, args=(batch,), rounds=5, iterations=1, warmup_rounds=1)
    rate = BATCH / benchmark.stats.stats.mean
    benchmark.extra_info.update(patterns_per_s=rate, threads=THREADS, batch=BATCH)
    line = f"\n{backend_name} {precision} ({'channels-last ' if precision == 'bf16' else ''}{THREADS} threads): " \
           f"{rate:.0f} patterns/s"
    if precision != "fp32":
        ref, _ = open_backend(model_spec, "onnxruntime", "cpu", "fp32", threads=THREADS)
        from ptyfast.metrics import psnr

        got, want = backend(batch), ref(batch)
        m = backend.manifest
        amp = psnr(want[0], got[0], m.amplitude_range[1] - m.amplitude_range[0])
        ph = psnr(want[1], got[1], m.phase_range[1] - m.phase_range[0])
        benchmark.extra_info.update(psnr_amplitude=amp, psnr_phase=ph)
        line += f"; PSNR vs fp32 amplitude {amp:.1f} dB, phase {ph:.1f} dB"
    print(line)
    backend.close()
