"""``ptyfast bench``: real (tiny) runs of the library and the CLI, FLOP counting, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from cli_helpers import app, runner  # noqa: E402
from cli_helpers import one_error_line  # noqa: E402


# PtyNet-S at 128²: 0.2243 GMAC = 0.449 GFLOP per pattern (reference-architectures.md: "≈ 0.45 GFLOP").
PTYNET_S_MACS = 224_329_728


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Seeded random PtyNet-S weights (throughput and FLOPs do not depend on the values), own cache."""
    from model_helpers import random_checkpoint
    from ptyfast.physics.probe import default_probe

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PTYFAST_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield random_checkpoint(tmp_path_factory.mktemp("w") / "ptynet-s.pt", probe=default_probe(),
                                input_size=(128, 128), probe_photons=1000.0)[0]


@pytest.fixture(scope="module")
def result(weights, tmp_path_factory):
    from ptyfast.bench import BenchOptions, run_bench, write_json

    o = BenchOptions(model=str(weights), backends=("onnxruntime", "tensorrt"), precisions=("fp32", "bf16"),
                     batches=(1, 4), repeats=3, max_seconds=0.5, frames=16, e2e_batch=4, peak=False, threads=2)
    res = run_bench(o)
    path = write_json(res, tmp_path_factory.mktemp("j") / "bench.json")
    return json.loads(path.read_text())


def test_json_fields_and_values(result):
    assert result["device"]["cpu"] and result["device"]["threads"] == 2
    m = result["model"]
    assert m["architecture"] == "ptynet-s" and m["parameters"] == 325_800
    assert m["macs_per_pattern"] == PTYNET_S_MACS and abs(m["flops_per_pattern"] / 0.45e9 - 1) < 0.01
    ok = [r for r in result["model_only"] if r["status"] == "ok"]
    assert {(r["backend"], r["precision"], r["batch"]) for r in ok} == {("onnxruntime", "fp32", 1),
                                                                          ("onnxruntime", "fp32", 4)}
    for r in ok:
        assert r["device"] == "cpu" and r["samples"] >= 2
        assert 0 < r["latency_p50_ms"] <= r["latency_p99_ms"] < 60_000
        assert r["patterns_per_s"] == pytest.approx(1e3 * r["batch"] / r["latency_p50_ms"])
        assert 10 < r["peak_rss_mb"] < 64_000 and r["gpu_memory_mb"] is None
        assert r["achieved_flops"] == pytest.approx(r["patterns_per_s"] * m["flops_per_pattern"])
    refs = {r["key"] for r in result["references"]}
    assert {"paper_a100_utilisation", "paper_a100_memory", "paper_finetune", "babu_a6000_trt"} <= refs


def test_missing_backend_and_precision_are_rows_not_failures(result):
    bad = {(r["backend"], r["precision"]): r["reason"] for r in result["model_only"] if r["status"] != "ok"}
    assert "bf16" in bad[("onnxruntime", "bf16")]
    assert bad[("tensorrt", "fp32")]  # TensorRT is not installed here (or no GPU): says why
    e2e = {(r["backend"], r["precision"]): r for r in result["end_to_end"]["rows"]}
    assert e2e[("tensorrt", "fp32")]["status"] == "not available"


def test_end_to_end_stages(weights, result):
    from ptyfast.bench import simulate_benchmark_scan
    from ptyfast.runtime.backends import open_backend
    from ptyfast.runtime.reconstruct import ReconstructJob, run_reconstruct

    e2e = result["end_to_end"]
    assert e2e["scan"]["frames"] == 16 and e2e["scan"]["forward_model_patterns_per_s"] > 0
    r = next(r for r in e2e["rows"] if r["backend"] == "onnxruntime" and r["precision"] == "fp32")
    assert r["status"] == "ok" and r["frames"] == 16
    assert set(r["stages_s"]) == {"read", "preprocess", "infer", "stitch", "consistency"}
    assert all(v >= 0 for v in r["stages_s"].values()) and r["stages_s"]["infer"] > 0
    assert r["wall_s"] >= r["stages_s"]["infer"] and r["patterns_per_s"] == pytest.approx(16 / r["wall_s"])
    # the row's consistency figure is its reconstruction's: the benchmark's scan (same seed) reconstructed again
    # with the same weights (random ones: ε close to 1, a least-squares fit that explains little)
    scan, _ = simulate_benchmark_scan(16, seed=0)
    backend, reason = open_backend(str(weights), "onnxruntime", "cpu", "fp32", threads=2)
    with backend:
        again, _ = run_reconstruct(scan, ReconstructJob(batch=4, threads=2), backend=backend, reason=reason)
    assert 0 < r["consistency_error"] < 1  # least squares in the amplitude scale: never worse than predicting 0
    assert r["consistency_error"] == pytest.approx(again.consistency.error, rel=1e-4)


def test_onnx_flop_count_matches_torch(weights, result):
    from ptyfast.models.flops import count_macs_onnx
    from ptyfast.models.pretrained import resolve_model
    from ptyfast.export.model_files import fp32_onnx

    pytest.importorskip("onnx")
    assert count_macs_onnx(fp32_onnx(resolve_model(weights))) == PTYNET_S_MACS


def test_peak_flops_measured():
    """The fp32 peak is 2n³ FLOPs over the best time of an n×n product: against the same product timed here (best
    of as many rounds), within a factor of 3 either way on a busy machine."""
    import time

    from ptyfast.machine import measure_peak_flops

    n, rounds = 512, 5
    peaks = measure_peak_flops(threads=1, n=n, rounds=rounds)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    here = 2.0 * n**3 / best
    assert here / 3 < peaks["fp32"] < 3 * here, (peaks, here)


def test_render_prints_tables(result):
    from rich.console import Console

    from ptyfast.bench import render

    # a batch-16 row at 1,000 patterns/s using 25 % of the fp32 peak: the comparisons printed beside the published
    # figures are computed from the rows (1,000 µs per frame, 1,000 / 14,286 = 0.070× of Babu et al.'s)
    res = json.loads(json.dumps(result))
    ok = next(r for r in res["model_only"] if r["status"] == "ok")
    res["model_only"].append({**ok, "batch": 16, "patterns_per_s": 1000.0, "fraction_of_peak": 0.25,
                              "peak_reference": "fp32"})
    con = Console(record=True, width=400)
    render(res, con)
    text = con.export_text()
    assert "model only" in text and "end to end" in text and "not available" in text
    assert "1,000 µs/frame at batch 16 (onnxruntime fp32); 0.070× of it" in text
    assert "25 % of this device's fp32 matmul peak (onnxruntime fp32 batch 16)" in text
    for r in result["model_only"]:
        if r["status"] == "ok":
            assert f"{r['patterns_per_s']:,.1f}" in text


def test_cli_small_run_writes_json(weights, tmp_path):
    out = tmp_path / "b.json"
    r = runner.invoke(app, ["bench", "--model", str(weights), "--backend", "onnxruntime", "--precision", "fp32",
                            "--batch", "2", "--repeats", "3", "--max-seconds", "0.2", "--no-end-to-end",
                            "--threads", "1", "--json", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["model_only"][0]["status"] == "ok" and data["end_to_end"] is None


@pytest.mark.parametrize("args,fragment", [
    (["--backend", "nope"], "unknown backend 'nope'"),
    (["--precision", "fp8"], "unknown precision 'fp8'"),
    (["--batch", "1,x"], "could not read the batch list"),
    (["--batch", "0"], "batch sizes must be"),
    (["--json", "/nonexistent-dir/b.json"], "does not exist"),
])
def test_cli_bad_input_one_line(args, fragment):
    r = runner.invoke(app, ["bench", *args])
    one_error_line(r, fragment)
