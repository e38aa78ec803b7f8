"""Benchmarks of ptyfast's inference stack: the library behind ``ptyfast bench`` (machine facts and memory live in
:mod:`ptyfast.machine`, MAC counting in :mod:`ptyfast.models.flops`).

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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ptyfast.choices import Precision
from ptyfast.errors import InputError

BENCH_BACKENDS = ("onnxruntime", "torch", "tensorrt")
BENCH_PRECISIONS = Precision.values()

#: Published figures the measured ones are read against.
REFERENCES = [
    {"key": "paper_a100_utilisation", "what": "PtyNet-S inference on an NVIDIA A100 (paper Table 1)",
     "value": "46 % of the GPU", "source": "Pan et al., iScience 2023, Table 1"},
    {"key": "paper_a100_memory", "what": "PtyNet-S GPU memory on an A100 (paper Table 1)",
     "value": "2.0 GB", "bytes": 2.0e9, "source": "Pan et al., iScience 2023, Table 1"},
    {"key": "paper_finetune", "what": "fine-tune all PtyNet parameters on 256 patterns of 128² (A100)",
     "value": "< 90 s", "seconds": 90.0, "source": "Pan et al., iScience 2023, Results (fine-tuning)"},
    {"key": "babu_a6000_trt", "what": "PtychoNN 2.0, RTX A6000 + TensorRT, batch 16",
     "value": "70 µs/frame ≈ 14,286 patterns/s", "patterns_per_s": 1e6 / 70.0,
     "source": "Babu et al., Nat. Commun. 14, 7059 (2023)"},
]

from ptyfast.machine import device_facts, gpu_name, measure_peak_flops, peak_rss_bytes, reset_peak_rss
from ptyfast.models.flops import count_macs_onnx, count_macs_torch


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


# -- options and results --------------------------------------------------------------------------------------


@dataclass
class BenchOptions:
    """What ``ptyfast bench`` measures.

    Attributes
    ----------
    model : shipped name or .pt/.onnx path; None = the shipped PtyNet-S, or seeded random PtyNet-S weights
        when none is shipped (throughput does not depend on the weight values).
    backends : subset of ``onnxruntime``, ``torch``, ``tensorrt``.
    precisions : subset of ``fp32``, ``fp16``, ``bf16``, ``int8``.
    batches : batch sizes of the model-only cases.
    repeats : most timed calls per case (at least 2 are made; fewer than ``repeats`` when ``max_seconds``
        is spent).
    max_seconds : time budget of the timed calls of one case.
    device : ``auto``, ``cpu`` or ``cuda``.
    threads : CPU threads (default: all cores this process may use).
    end_to_end : also run the end-to-end cases.
    frames : patterns of the end-to-end scan (rounded to a square raster).
    e2e_batch : inference batch of the end-to-end cases (None: each backend's default, as ``reconstruct``).
    finetune : also time one fine-tuning epoch on 256 patterns (torch) and extrapolate to 300 epochs.
    peak : measure the device's peak matmul FLOP/s.
    seed : seeds the simulated data.
    """

    model: str | None = None
    backends: tuple[str, ...] = ("onnxruntime", "torch")
    precisions: tuple[str, ...] = ("fp32", "int8", "bf16")
    batches: tuple[int, ...] = (1, 16, 256)
    repeats: int = 10
    max_seconds: float = 2.0
    device: str = "auto"
    threads: int | None = None
    end_to_end: bool = True
    frames: int = 256
    e2e_batch: int | None = None
    finetune: bool = False
    peak: bool = True
    seed: int = 0

    def validate(self) -> "BenchOptions":
        """Check every field; raise :class:`InputError` naming the first bad one."""
        for b in self.backends:
            if b not in BENCH_BACKENDS:
                raise InputError(f"unknown backend '{b}'; choose from {', '.join(BENCH_BACKENDS)} or 'all'.")
        for p in self.precisions:
            if p not in BENCH_PRECISIONS:
                raise InputError(f"unknown precision '{p}'; choose from {', '.join(BENCH_PRECISIONS)}.")
        if not self.backends or not self.precisions or not self.batches:
            raise InputError("give at least one backend, one precision and one batch size.")
        if any(int(b) < 1 or int(b) > 65536 for b in self.batches):
            raise InputError(f"batch sizes must be in 1…65536; found {list(self.batches)}.")
        if self.repeats < 1:
            raise InputError(f"--repeats must be at least 1; found {self.repeats}.")
        if self.frames < 4:
            raise InputError(f"--frames must be at least 4; found {self.frames}.")
        if self.e2e_batch is not None and self.e2e_batch < 1:
            raise InputError(f"the end-to-end batch must be at least 1; found {self.e2e_batch}.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"unknown device '{self.device}'; choose auto, cpu or cuda.")
        return self


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


# -- model-only cases -----------------------------------------------------------------------------------------


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
#: confined probe's lit discs do not overlap, so the phase-offset solve, part of every real reconstruct, did no work.
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


# -- driver ---------------------------------------------------------------------------------------------------


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




# -- rendering ------------------------------------------------------------------------------------------------


def _fmt(v, spec: str = ".1f", none: str = "—") -> str:
    return none if v is None else format(v, spec)


def render(result: dict, console) -> None:
    """Print the benchmark as rich tables on ``console``."""
    from rich.table import Table

    d, m = result["device"], result["model"]
    flops = m.get("flops_per_pattern")
    console.print(f"[bold]device[/]: {d['cpu']} ({d['threads']} threads of {d['cores_usable']} usable cores; "
                  f"{', '.join(d['isa']) or 'no AVX-512'}; refinement FFTs: {d.get('refine_fft', 'scipy')})"
                  + (f"; GPU {d['gpu']}" if d["gpu"] else "; no GPU"))
    console.print(f"[bold]model[/]: {m['name']} ({m['architecture']}, {m['weights']}), "
                  f"{_fmt(m.get('parameters'), ',d')} parameters, "
                  + (f"{flops / 1e9:.3f} GFLOP/pattern ({m['flops_method']})" if flops else m["flops_method"]))
    for k, f in result["compute_floor"].items():
        console.print(f"[bold]compute floor[/] ({k} matmul peak {f['peak_flops'] / 1e9:.0f} GFLOP/s measured now): "
                      f"{f['floor_us_per_pattern']:.0f} µs/pattern = {f['ceiling_patterns_per_s']:,.0f} patterns/s")

    t = Table(title="model only (median of timed calls after a warm-up)")
    for col in ("backend", "prec.", "batch", "patterns/s", "p50 ms", "p99 ms", "n", "RSS MB", "GPU MB", "% peak"):
        t.add_column(col, justify="left" if col in ("backend", "prec.") else "right")
    missing: dict[tuple[str, str], str] = {}
    for r in result["model_only"]:
        if r["status"] != "ok":
            missing.setdefault((r["backend"], r["precision"]), r["reason"])
            continue
        frac = r.get("fraction_of_peak")
        t.add_row(f"{r['backend']}-{r['device']}", r["precision"], str(r["batch"]), f"{r['patterns_per_s']:,.1f}",
                  f"{r['latency_p50_ms']:.2f}", f"{r['latency_p99_ms']:.2f}", str(r["samples"]),
                  f"{r['peak_rss_mb']:.0f}", _fmt(r.get("gpu_memory_mb"), ".0f"),
                  "—" if frac is None else f"{100 * frac:.0f} %")
    console.print(t)
    for (b, p), why in missing.items():
        console.print(f"  {b} {p}: [yellow]not available[/]: {why}")
    console.print("[dim]% peak: achieved FLOP/s ÷ this device's matmul peak of the same precision (fp32/bf16); "
                  "RSS: peak resident memory of the process during the case.[/]")

    e2e = result.get("end_to_end")
    if e2e:
        s = e2e["scan"]
        console.print(f"[bold]end to end[/]: {s['frames']} patterns of 128², object {s['object_shape'][0]}², "
                      f"{s['overlap']:.0%} overlap; forward model (simulate) {s['forward_model_patterns_per_s']:,.0f} patterns/s; "
                      f"CXI write {s['cxi_write_s']:.2f} s")
        t = Table(title="end to end: lazy CXI → preprocess → infer → stitch → consistency (seconds per stage)")
        for col in ("backend", "prec.", "patterns/s", "w/o cons.", "read*", "prep.", "infer", "stitch", "cons.",
                    "wall s"):
            t.add_column(col, justify="left" if col in ("backend", "prec.") else "right")
        for r in e2e["rows"]:
            if r["status"] != "ok":
                continue
            st = r["stages_s"]
            t.add_row(f"{r['backend']}-{r['device']}", r["precision"], f"{r['patterns_per_s']:,.1f}",
                      f"{r['patterns_per_s_without_consistency']:,.1f}",
                      *[f"{st[k]:.2f}" for k in ("read", "preprocess", "infer", "stitch", "consistency")],
                      f"{r['wall_s']:.2f}")
        console.print(t)
        console.print("[dim]* read runs in a background thread and overlaps the other stages.[/]")

    t = Table(title="reference figures (published) beside this run")
    t.add_column("reference", ratio=3)
    t.add_column("published", justify="right", ratio=2)
    t.add_column("here", justify="right", ratio=3)
    ok = [r for r in result["model_only"] if r["status"] == "ok"]
    best = max(ok, key=lambda r: r["patterns_per_s"], default=None)
    best_frac = max((r for r in ok if r.get("fraction_of_peak") is not None), key=lambda r: r["fraction_of_peak"],
                    default=None)
    b16 = [r for r in result["model_only"] if r["status"] == "ok" and r["batch"] == 16]
    ft = result.get("finetune")
    for ref in result["references"]:
        here = "—"
        if ref["key"] == "babu_a6000_trt" and b16:
            r = max(b16, key=lambda r: r["patterns_per_s"])
            here = (f"{1e6 / r['patterns_per_s']:,.0f} µs/frame at batch 16 ({r['backend']} {r['precision']}); "
                    f"{r['patterns_per_s'] / ref['patterns_per_s']:.3f}× of it")
        elif ref["key"] == "paper_a100_utilisation" and best_frac:
            here = (f"{100 * best_frac['fraction_of_peak']:.0f} % of this device's {best_frac['peak_reference']} "
                    f"matmul peak ({best_frac['backend']} {best_frac['precision']} batch {best_frac['batch']})")
        elif ref["key"] == "paper_a100_memory" and best:
            gm = [r["gpu_memory_mb"] for r in result["model_only"] if r.get("gpu_memory_mb")]
            here = (f"{max(gm):.0f} MB GPU" if gm else
                    f"host peak RSS {max(r['peak_rss_mb'] for r in result['model_only'] if r['status'] == 'ok'):.0f} MB")
        elif ref["key"] == "paper_finetune" and ft and ft.get("status") == "ok":
            here = f"{ft['epoch_s']:.1f} s/epoch on {ft['device']} → {ft['epochs_300_s']:.0f} s for 300 epochs"
        t.add_row(ref["what"], f"{ref['value']} [dim]({ref['source']})[/]", here)
    for k, f in result["compute_floor"].items():
        t.add_row(f"compute floor of this device ({k} matmul peak)", "—",
                  f"{f['ceiling_patterns_per_s']:,.0f} patterns/s")
    console.print(t)


__all__ = ["BenchOptions", "REFERENCES", "run_bench", "render", "write_json", "model_facts", "simulate_benchmark_scan",
           "time_case"]
