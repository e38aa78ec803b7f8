"""Benchmarks of ptyfast's inference stack: the library behind ``ptyfast bench`` (machine facts and memory live in
:mod:`ptyfast.machine`, MAC counting in :mod:`ptyfast.models.flops`).

This module resolves the model, counts its cost and runs everything (:func:`run_bench`); the options and the
published references are in :mod:`ptyfast.bench_options`, the timed cases in :mod:`ptyfast.bench_cases`, the
tables in :mod:`ptyfast.bench_render`.

What is measured
----------------
* **Model only**, per backend × precision × batch: throughput (patterns/s), latency per batch (p50/p99 over the
  timed calls), peak host RSS during the case, GPU memory (``torch.cuda.max_memory_allocated`` for the torch
  backend on CUDA; ONNX Runtime / TensorRT allocate outside torch and show "—"). One warm-up call precedes the
  timed calls; every call returns host numpy arrays, so device work is finished (synchronised) when the timer
  stops. The figure reported is the median over the timed calls.
* **End to end** (``end_to_end=True``): a scan is simulated from the bundled held-out cat faces (forward model,
  timed too), written to CXI, opened lazily and reconstructed with :func:`ptyfast.runtime.reconstruct.run_reconstruct`
  with the same, already opened backend; the per-stage split (read / preprocess / infer / stitch / consistency /
  wall) comes from ``rec.timings``. The HDF5 reader runs in a background thread, so ``read`` overlaps the other
  stages.
* **Model facts**: parameters, and FLOPs per pattern = 2 × multiply-accumulates of the Conv / ConvTranspose /
  Linear layers, counted with forward hooks on the torch model (or, without torch, from the ONNX graph's weight
  and tensor shapes). PtyNet-S at 128²: 0.2243 GMAC = 0.449 GFLOP, the ≈ 0.45 GFLOP of the reference code.
* **Compute floor** of this device: FLOPs per pattern ÷ the peak FLOP/s measured with a large matrix product
  (fp32, and bf16 where torch supports it), i.e. the fastest any backend could go if it ran at the device's
  matmul peak.
* **Reference figures** printed beside the measured ones (:data:`REFERENCES`).

Every missing backend or precision is a row with ``status = "not available"`` and the reason, never a failure.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ptyfast.bench_cases import (BENCH_OVERLAP, end_to_end_cases, finetune_case, model_only_cases,
                                 simulate_benchmark_scan, time_case)
from ptyfast.bench_options import BENCH_BACKENDS, BENCH_PRECISIONS, REFERENCES, BenchOptions
from ptyfast.bench_render import render
from ptyfast.errors import InputError
from ptyfast.machine import device_facts, gpu_name, measure_peak_flops
from ptyfast.models.flops import count_macs_onnx, count_macs_torch

__all__ = ["BENCH_BACKENDS", "BENCH_OVERLAP", "BENCH_PRECISIONS", "BenchOptions", "REFERENCES", "end_to_end_cases",
           "finetune_case", "model_facts", "model_only_cases", "render", "run_bench", "simulate_benchmark_scan",
           "time_case", "write_json"]


def model_facts(source) -> dict:
    """Architecture, parameters, MACs and FLOPs per pattern of a resolved model, and how they were counted."""
    m = source.manifest
    h, w = m.input_size
    out = {"name": source.name, "architecture": m.architecture, "input_size": [h, w],
           "files": [str(p) for p in source.files], "training": {k: m.training.get(k) for k in
                                                                  ("steps", "time_s", "val_loss", "hardware")
                                                                  if k in m.training}}
    try:
        if source.checkpoint is not None:
            from ptyfast.models import count_parameters
            from ptyfast.models.checkpoint import load_checkpoint

            net, _ = load_checkpoint(source.checkpoint)
            out["parameters"] = count_parameters(net)
            out["macs_per_pattern"] = count_macs_torch(net, (1, 1, h, w))
            out["flops_method"] = "torch forward hooks: 2 × MACs of Conv2d/ConvTranspose2d/Linear"
        else:
            from ptyfast.export.model_files import fp32_onnx

            onnx_path = fp32_onnx(source)
            out["macs_per_pattern"] = count_macs_onnx(onnx_path)
            import onnx
            from onnx import numpy_helper

            out["parameters"] = int(sum(numpy_helper.to_array(t).size for t in onnx.load(str(onnx_path)).graph.initializer))
            out["flops_method"] = "ONNX graph: 2 × MACs of Conv/ConvTranspose/Gemm from shape inference"
        out["flops_per_pattern"] = 2 * out["macs_per_pattern"]
    except (ModuleNotFoundError, InputError) as exc:
        out.update(parameters=None, macs_per_pattern=None, flops_per_pattern=None,
                   flops_method=f"not counted: {exc}")
    return out


def _resolve(spec):
    """The model to benchmark and a note on where its weights came from."""
    from ptyfast.models.pretrained import cache_dir, resolve_model

    if spec is not None:
        return resolve_model(spec), "given"
    try:
        return resolve_model(None), "shipped"
    except InputError:
        pass
    # No shipped weights in this installation: seeded random PtyNet-S weights (same graph, same cost).
    try:
        import torch

        from ptyfast.models import build_model, get_entry
        from ptyfast.models.checkpoint import save_checkpoint
        from ptyfast.physics.probe import default_probe
        from ptyfast.models.manifest import probe_hash
    except ModuleNotFoundError:
        raise InputError("no shipped PtyNet-S here and no PyTorch to make benchmark weights; pass --model "
                         "FILE.onnx.") from None
    path = cache_dir("bench") / "ptynet-s-random-seed0.pt"
    if not path.is_file():
        torch.manual_seed(0)
        p = default_probe()
        save_checkpoint(path, build_model("ptynet-s"), get_entry("ptynet-s").manifest(
            input_size=tuple(p.shape), probe_sha256=probe_hash(p), probe_photons=float(np.sum(np.abs(p) ** 2))))
    return resolve_model(path), "seeded random PtyNet-S weights (no shipped model; throughput does not depend on them)"


def run_bench(options: BenchOptions | None = None, *, progress=None, workdir: str | Path | None = None) -> dict:
    """Run the benchmark; returns a JSON-able dict (see the module docstring for what each part means).

    Parameters
    ----------
    options : BenchOptions
    progress : callable(str), optional
        Told what runs next.
    workdir : folder for the end-to-end scan file (default: a temporary folder, removed afterwards).
    """
    from ptyfast import __version__
    from ptyfast.runtime.backends import cpu_threads

    o = (options or BenchOptions()).validate()
    threads = o.threads or cpu_threads()
    source, weights_note = _resolve(o.model)
    t_start = time.perf_counter()
    facts = model_facts(source)
    flops = facts.get("flops_per_pattern")
    dev = "cuda" if (o.device != "cpu" and gpu_name() is not None) else "cpu"
    peaks: dict[str, float] = {}
    if o.peak:
        if progress:
            progress("measuring the peak matmul FLOP/s")
        peaks = measure_peak_flops(threads=threads, device="cpu")
        if dev == "cuda":
            try:
                peaks.update({f"cuda_{k}": v for k, v in measure_peak_flops(threads=threads, device="cuda").items()})
            except ModuleNotFoundError:
                pass
    floor = {}
    if flops:
        for k, v in peaks.items():
            floor[k] = {"peak_flops": v, "ceiling_patterns_per_s": v / flops, "floor_us_per_pattern": 1e6 * flops / v}
    row_peaks = ({k.removeprefix("cuda_"): v for k, v in peaks.items() if k.startswith("cuda_")} if dev == "cuda"
                 else {k: v for k, v in peaks.items() if not k.startswith("cuda_")})
    rows, opened = model_only_cases(source, o, flops, row_peaks, progress)
    e2e = None
    if o.end_to_end:
        if workdir is None:
            with tempfile.TemporaryDirectory(prefix="ptyfast-bench-") as tmp:
                e2e = end_to_end_cases(source, o, Path(tmp), progress)
        else:
            Path(workdir).mkdir(parents=True, exist_ok=True)
            e2e = end_to_end_cases(source, o, Path(workdir), progress)
    ft = None
    if o.finetune:
        if progress:
            progress("fine-tuning one epoch")
        ft = finetune_case(source, o)
    return {
        "ptyfast_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(o).items()},
        "device": device_facts(threads), "model": {**facts, "weights": weights_note},
        "peak_flops": peaks, "compute_floor": floor, "model_only": rows, "backends": opened,
        "end_to_end": e2e, "finetune": ft, "references": REFERENCES,
        "bench_seconds": time.perf_counter() - t_start,
    }


def write_json(result: dict, path: str | Path) -> Path:
    """Write ``result`` atomically as indented JSON."""
    from ptyfast.io.atomic import write_json as _write

    return _write(path, result)
