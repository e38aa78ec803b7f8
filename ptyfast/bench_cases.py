"""The timed cases of ``ptyfast bench`` (what each measures: :mod:`ptyfast.bench`): the model alone per
backend × precision × batch, end to end from a simulated CXI scan, and one fine-tuning epoch."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ptyfast.bench_options import BenchOptions
from ptyfast.errors import InputError
from ptyfast.machine import peak_rss_bytes, reset_peak_rss

__all__ = ["BENCH_OVERLAP", "end_to_end_cases", "finetune_case", "model_only_cases", "simulate_benchmark_scan",
           "time_case"]


def _patterns(n: int, manifest, seed: int) -> np.ndarray:
    from ptyfast.export.samples import simulated_patterns

    return simulated_patterns(n, manifest, seed=seed)


def time_case(backend, x: np.ndarray, *, repeats: int, max_seconds: float) -> list[float]:
    """Seconds per call of ``backend(x)``: one warm-up call, then ≥ 2 and ≤ ``repeats`` timed calls (fewer
    than ``repeats`` once ``max_seconds`` is spent)."""
    backend(x)  # warm-up: allocations, kernel selection, lazy initialisation
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max(repeats, 1):
        t = time.perf_counter()
        backend(x)  # returns host arrays: device work is complete here
        times.append(time.perf_counter() - t)
        if len(times) >= min(2, repeats) and time.perf_counter() - start > max_seconds:
            break
    return times


def _gpu_mem_reset(backend) -> bool:
    if backend.name == "torch" and backend.device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return True
    return False


def _row(backend: str, precision: str, batch: int, **kw) -> dict:
    return {"backend": backend, "precision": precision, "batch": batch, "status": "ok", "reason": "", **kw}


def model_only_cases(source, o: BenchOptions, flops: int | None, peaks: dict, progress=None) -> tuple[list, dict]:
    """All model-only rows, and the opened backends' descriptions keyed by ``backend/precision``."""
    from ptyfast.runtime.backends import open_backend

    rows: list[dict] = []
    opened: dict[str, dict] = {}
    x_all = _patterns(max(o.batches), source.manifest, o.seed)
    for name in o.backends:
        for prec in o.precisions:
            try:
                backend, reason = open_backend(source, name, o.device, prec, threads=o.threads)
            except (InputError, ImportError, RuntimeError) as exc:
                why = str(exc).split("\n")[0]
                rows += [_row(name, prec, b, status="not available", reason=why) for b in o.batches]
                continue
            opened[f"{name}/{prec}"] = {**backend.describe(), "reason": reason}
            with backend:
                for b in o.batches:
                    x = x_all[:b] if b <= len(x_all) else np.resize(x_all, (b,) + x_all.shape[1:])
                    if progress:
                        progress(f"{name} {prec} batch {b}")
                    gpu = _gpu_mem_reset(backend)
                    reset_ok = reset_peak_rss()
                    try:
                        times = time_case(backend, x, repeats=o.repeats, max_seconds=o.max_seconds)
                    except Exception as exc:  # a backend that opens but cannot run this case (e.g. OOM)
                        rows.append(_row(name, prec, b, status="not available",
                                         reason=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))
                        continue
                    med = float(np.median(times))
                    rate = b / med
                    row = _row(name, prec, b, device=backend.device, patterns_per_s=rate,
                               latency_p50_ms=1e3 * med, latency_p99_ms=1e3 * float(np.percentile(times, 99)),
                               samples=len(times), peak_rss_mb=peak_rss_bytes() / 2**20,
                               peak_rss_scope="this case" if reset_ok else "process lifetime",
                               gpu_memory_mb=None)
                    if gpu:
                        import torch

                        row["gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
                    if flops:
                        row["achieved_flops"] = rate * flops
                        # fp32 and bf16 against their own matmul peak; int8/fp16 on the CPU have no measured peak
                        ref_name = prec if prec in peaks else ("fp32" if prec == "fp32" else None)
                        if ref_name and peaks.get(ref_name):
                            row["fraction_of_peak"] = rate * flops / peaks[ref_name]
                            row["peak_reference"] = ref_name
                    rows.append(row)
    return rows, opened


# -- end to end -----------------------------------------------------------------------------------------------


#: Overlap of the benchmark raster (of the 128² window, as ``ptyfast simulate``'s default): at 0.5 the bundled
#: confined probe's lit discs would not overlap, leaving the phase-offset solve (part of every real reconstruct)
#: nothing to do.
BENCH_OVERLAP = 0.75


def simulate_benchmark_scan(frames: int, *, seed: int = 0, overlap: float = BENCH_OVERLAP):
    """A noise-free raster scan of about ``frames`` patterns (square grid, 0–2 px jitter) of an object made from
    the bundled held-out cat faces (amplitude ≠ phase image), with the bundled probe. Returns (scan, seconds
    spent in the forward model)."""
    from ptyfast.io.images import held_out_object
    from ptyfast.physics.probe import default_probe
    from ptyfast.physics.scanpath import overlap_to_step, raster_positions
    from ptyfast.physics.simulate import simulate_scan

    probe = default_probe()
    h = probe.shape[0]
    side = max(2, int(round(np.sqrt(frames))))
    step = overlap_to_step(overlap, h)
    size = h + 2 + step * (side - 1)
    obj = held_out_object((size, size))
    rng = np.random.default_rng(seed)
    pos = raster_positions(obj.shape, probe.shape, overlap=overlap, jitter=2.0, rng=rng)
    t = time.perf_counter()
    scan = simulate_scan(obj, probe, pos, rng=rng, meta={"source": "ptyfast bench (held-out cat faces)"})
    return scan, time.perf_counter() - t


def end_to_end_cases(source, o: BenchOptions, workdir: Path, progress=None) -> dict:
    """Simulate → CXI → lazy read → reconstruct, per backend × precision; returns the scan facts and rows."""
    from ptyfast.io.cxi import read_cxi, write_cxi
    from ptyfast.runtime.backends import open_backend
    from ptyfast.runtime.reconstruct import ReconstructJob, run_reconstruct

    if progress:
        progress("end to end: simulating the scan")
    scan, t_sim = simulate_benchmark_scan(o.frames, seed=o.seed)
    t = time.perf_counter()
    path = write_cxi(Path(workdir) / "bench_scan.cxi", scan)
    t_write = time.perf_counter() - t
    info = {"frames": scan.n_frames, "object_shape": list(scan.truth.shape), "overlap": BENCH_OVERLAP,
            "forward_model_s": t_sim, "forward_model_patterns_per_s": scan.n_frames / t_sim,
            "cxi_write_s": t_write, "cxi_bytes": path.stat().st_size}
    rows = []
    for name in o.backends:
        for prec in o.precisions:
            t0 = time.perf_counter()
            try:
                backend, reason = open_backend(source, name, o.device, prec, threads=o.threads)
            except (InputError, ImportError, RuntimeError) as exc:
                rows.append({"backend": name, "precision": prec, "status": "not available",
                             "reason": str(exc).split("\n")[0]})
                continue
            t_load = time.perf_counter() - t0
            if progress:
                progress(f"end to end: {name} {prec}")
            with backend:
                backend(_patterns(8, source.manifest, o.seed))  # warm-up
                lazy = read_cxi(path)
                job = ReconstructJob(model=None, backend=name, precision=prec, batch=o.e2e_batch,
                                     threads=o.threads)
                reset_ok = reset_peak_rss()
                rec, prov = run_reconstruct(lazy, job, backend=backend, reason=reason)
            tm = dict(rec.timings)
            stages = {k: float(tm.get(k, 0.0)) for k in ("read", "preprocess", "infer", "stitch", "consistency")}
            rows.append({
                "backend": name, "precision": prec, "device": backend.device, "status": "ok", "reason": "",
                "batch": o.e2e_batch or backend.default_batch, "frames": scan.n_frames, "stages_s": stages,
                "wall_s": float(tm["wall"]), "wall_stitched_s": float(tm.get("wall_stitched", tm["wall"])),
                "patterns_per_s": scan.n_frames / float(tm["wall"]),
                "patterns_per_s_without_consistency": scan.n_frames / float(tm.get("wall_stitched", tm["wall"])),
                "infer_patterns_per_s": scan.n_frames / max(stages["infer"], 1e-9),
                "model_load_s": t_load, "peak_rss_mb": peak_rss_bytes() / 2**20,
                "peak_rss_scope": "this case" if reset_ok else "process lifetime",
                "consistency_error": None if rec.consistency is None else float(rec.consistency.error),
            })
    return {"scan": info, "rows": rows}


def finetune_case(source, o: BenchOptions, *, patterns: int = 256, batch: int = 16) -> dict:
    """Seconds of one fine-tuning epoch over ``patterns`` patterns of 128² (the paper's 256 at 75 % overlap), and
    the extrapolation to the paper's 300 epochs."""
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        return {"status": "not available", "reason": "fine-tuning needs PyTorch"}
    if source.checkpoint is None:
        return {"status": "not available", "reason": f"model '{source.name}' has no torch checkpoint"}
    from ptyfast.finetune import FinetuneOptions, finetune
    from ptyfast.models.checkpoint import load_checkpoint

    scan, _ = simulate_benchmark_scan(patterns, seed=o.seed, overlap=0.75)  # the paper's fine-tuning set
    net, manifest = load_checkpoint(source.checkpoint)
    dev = "cuda" if (o.device != "cpu" and torch.cuda.is_available()) else "cpu"
    res = finetune(scan, net, manifest, scan.probe, FinetuneOptions(epochs=1, batch=batch, threads=o.threads or 0),
                   device=dev)
    per_epoch = float(res.time_s)
    return {"status": "ok", "patterns": scan.n_frames, "batch": batch, "device": dev, "epoch_s": per_epoch,
            "epochs_300_s": 300 * per_epoch, "paper_a100_s": 90.0}
