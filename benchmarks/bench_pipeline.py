"""End-to-end reconstruction and the forward model, as pytest-benchmark cases.

Run (not part of the plain test run; see benchmarks/README.md)::

    PTYFAST_BENCH_THREADS=2 pytest benchmarks/bench_pipeline.py --benchmark-only -s \
        --benchmark-json=pipeline.json

* ``test_end_to_end[...]``: lazy CXI (HDF5) → preprocess → infer → |P|²-weighted stitch → consistency, one case per
  backend/precision (ONNX Runtime fp32, ONNX Runtime INT8, torch fp32 eager, torch bf16), all on the same scan
  in one run. ``extra_info`` holds patterns/s end to end, without the consistency pass, and per stage.
* ``test_forward_model``: :func:`ptyfast.physics.forward.forward_intensity` (gather → P·O → FFT → |Ψ|²),
  patterns/s (numpy, CPU); ``test_forward_model_gpu`` the same with CuPy arrays (marked ``gpu``).
* ``test_end_to_end_gpu``: ONNX Runtime CUDA / torch CUDA end to end (marked ``gpu``, skipped without a GPU).

Weights: the shipped PtyNet-S when present (or ``$PTYFAST_BENCH_MODEL``), else seeded random PtyNet-S weights —
throughput does not depend on the weight values. Scan size: ``$PTYFAST_BENCH_FRAMES`` (default 1024).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")
pytest.importorskip("onnxruntime")

THREADS = int(os.environ.get("PTYFAST_BENCH_THREADS", "2"))
FRAMES = int(os.environ.get("PTYFAST_BENCH_FRAMES", "1024"))
BATCH = 128


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    os.environ.setdefault("PTYFAST_CACHE", str(tmp_path_factory.mktemp("cache")))
    from ptyfast.bench import _resolve

    src, note = _resolve(os.environ.get("PTYFAST_BENCH_MODEL"))
    print(f"\nweights: {src.name} ({note})")
    return src


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory):
    from ptyfast.bench import simulate_benchmark_scan
    from ptyfast.io.cxi import write_cxi

    scan, _ = simulate_benchmark_scan(FRAMES, seed=0)
    return write_cxi(tmp_path_factory.mktemp("scan") / "bench.cxi", scan), scan.n_frames


def _has_gpu() -> bool:
    from ptyfast.machine import gpu_name

    return gpu_name() is not None


def _e2e(benchmark, source, scan_file, backend_name, precision, device):
    from ptyfast.io.cxi import read_cxi
    from ptyfast.runtime.backends import open_backend
    from ptyfast.runtime.reconstruct import ReconstructJob, run_reconstruct

    path, n = scan_file
    try:
        backend, reason = open_backend(source, backend_name, device, precision, threads=THREADS)
    except Exception as exc:  # a missing backend is a skip with its reason, not a failure
        pytest.skip(f"{backend_name} {precision} not available: {exc}")
    job = ReconstructJob(backend=backend_name, precision=precision, batch=BATCH, threads=THREADS)
    runs = []

    def run():
        rec, _ = run_reconstruct(read_cxi(path), job, backend=backend, reason=reason)
        runs.append(rec.timings)

    with backend:
        run()  # warm-up (also the one-off ONNX export / INT8 quantisation)
        runs.clear()
        benchmark.pedantic(run, rounds=2, iterations=1)
    med = {k: float(np.median([t.get(k, 0.0) for t in runs])) for k in
           ("read", "preprocess", "infer", "stitch", "consistency", "wall", "wall_stitched")}
    info = {"frames": n, "batch": BATCH, "threads": THREADS, "device": backend.device,
            "patterns_per_s": n / med["wall"], "patterns_per_s_without_consistency": n / med["wall_stitched"],
            **{f"{k}_s": v for k, v in med.items()},
            **{f"{k}_patterns_per_s": n / max(med[k], 1e-9) for k in ("infer", "stitch", "consistency", "preprocess")}}
    benchmark.extra_info.update(info)
    print(f"\n{backend_name} {precision} ({backend.device}): {info['patterns_per_s']:.0f} patterns/s end to end "
          f"({info['patterns_per_s_without_consistency']:.0f} without consistency); stages s: "
          + ", ".join(f"{k} {med[k]:.2f}" for k in ("read", "preprocess", "infer", "stitch", "consistency")))


E2E_CPU = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("torch", "fp32"), ("torch", "bf16")]


@pytest.mark.parametrize("backend_name,precision", E2E_CPU, ids=[f"{b}-{p}" for b, p in E2E_CPU])
def test_end_to_end(benchmark, source, scan_file, backend_name, precision):
    _e2e(benchmark, source, scan_file, backend_name, precision, "cpu")


E2E_GPU = [("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("torch", "fp32"), ("torch", "bf16"), ("torch", "fp16"),
           ("tensorrt", "fp16")]


@pytest.mark.gpu
@pytest.mark.parametrize("backend_name,precision", E2E_GPU, ids=[f"{b}-{p}" for b, p in E2E_GPU])
def test_end_to_end_gpu(benchmark, source, scan_file, backend_name, precision):
    if not _has_gpu():
        pytest.skip("no CUDA GPU")
    benchmark.extra_info["gpu"] = __import__("ptyfast.machine", fromlist=["gpu_name"]).gpu_name()
    _e2e(benchmark, source, scan_file, backend_name, precision, "cuda")


@pytest.fixture(scope="module")
def forward_case():
    from ptyfast.bench import simulate_benchmark_scan

    scan, _ = simulate_benchmark_scan(256, seed=1)
    return scan.probe, scan.truth, scan.positions


def test_forward_model(benchmark, forward_case):
    from ptyfast.physics.forward import forward_intensity

    probe, obj, pos = forward_case
    benchmark.pedantic(forward_intensity, args=(probe, obj, pos), rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(patterns=len(pos), patterns_per_s=len(pos) / benchmark.stats.stats.median,
                                device="cpu (numpy)")


@pytest.mark.gpu
def test_forward_model_gpu(benchmark, forward_case):
    if not _has_gpu():
        pytest.skip("no CUDA GPU")
    cp = pytest.importorskip("cupy")
    from ptyfast.physics.forward import forward_intensity

    probe, obj, pos = forward_case
    dp, do = cp.asarray(probe), cp.asarray(obj)

    def run():
        forward_intensity(dp, do, pos)
        cp.cuda.Stream.null.synchronize()

    benchmark.pedantic(run, rounds=10, warmup_rounds=2)
    benchmark.extra_info.update(patterns=len(pos), patterns_per_s=len(pos) / benchmark.stats.stats.median,
                                device=cp.cuda.runtime.getDeviceProperties(0)["name"].decode())
