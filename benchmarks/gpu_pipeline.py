"""The device items of issue 34 in one process, with the card's name: model only with the input and output on the
device (eager autocast as shipped, BatchNorm folded, CUDA graph, optional ``torch.compile``) and host-returning
(numpy in, numpy out; the shipped backend against pinned reused buffers), the device→host copy of one batch's
output (``.cpu()`` into a fresh tensor against ``.copy_()`` into a reused pageable or pinned buffer, with the
page faults each costs), stitching 4,096 frames on the device (CuPy kernels) against numpy, end to end in one
process against host-returning model only, and bad input (``--device cuda`` without a visible GPU; out of device
memory at a huge batch: one sentence, nothing written).

Every variant's outputs are checked against the fp32 model on the same batch (relative RMS of the complex patches
on the lit pixels, :data:`~ptyfast.runtime.backends.bf16_check.BF16_TOLERANCE`, as ``--precision auto`` checks
bf16). The JSON is rewritten after each item, so a run cut short keeps what it measured. Exit status 1 when a
check failed (outputs differ, the stitched object differs, bad input handled wrongly); the speed targets are
reported, not enforced.

``--dry-run`` (``--small --device cpu``) runs the same code on the CPU at tiny sizes: torch on the CPU, the numpy
kernels standing in for CuPy, CUDA graphs, pinned memory, ``torch.compile`` and the out-of-memory probe skipped
with the reason recorded.

Run:  python benchmarks/gpu_pipeline.py [--json out.json] [--budget 150] [--compile-mode reduce-overhead]
      python benchmarks/gpu_pipeline.py --dry-run --json /tmp/p.json
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_ratio import positive_int  # noqa: E402

TARGETS = {"device_resident_patterns_per_s": 100_000, "host_returning_patterns_per_s": 3 * 7_100,
           "stitch_s": 0.1, "stitch_max_abs_difference": 1e-4, "end_to_end_ratio": 0.8}
OOM_LIMIT_MIB = 64  # device memory the out-of-memory probe's process may allocate
OOM_BATCH = 65536
COMPILE_MIN_S = 60  # budget left for torch.compile to be tried


@dataclass(frozen=True)
class Sizes:
    frames: int
    batch: int
    host_batches: tuple[int, ...]
    seconds: float
    min_calls: int
    rounds: int


FULL = Sizes(frames=4096, batch=512, host_batches=(512, 2048), seconds=1.0, min_calls=3, rounds=3)
SMALL = Sizes(frames=16, batch=4, host_batches=(2, 4), seconds=0.0, min_calls=1, rounds=1)


class Context:
    """What the items share: torch, the device, the model, the simulated scan and its preprocessed patterns, the
    report (written after each item) and the failed checks."""

    def __init__(self, a: argparse.Namespace) -> None:
        import torch

        from ptyfast.bench import simulate_benchmark_scan
        from ptyfast.models.checkpoint import load_checkpoint
        from ptyfast.models.preprocess import preprocess
        from ptyfast.models.pretrained import resolve_model
        from ptyfast.physics.probe import lit_pixels

        self.torch, self.args, self.t0 = torch, a, time.perf_counter()
        self.sizes = SMALL if a.small else FULL
        self.device, self.cuda = a.device, a.device == "cuda"
        self.precision = a.precision
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.precision]
        self.cupy = _cupy() if self.cuda else None
        self.checkpoint = resolve_model(a.model).checkpoint
        model, self.manifest = load_checkpoint(self.checkpoint)
        self.cl = torch.channels_last
        self.model = model.to(self.device).to(memory_format=self.cl).eval()
        self.folded = folded(self)
        self.scan, _ = simulate_benchmark_scan(self.sizes.frames, overlap=0.75)
        power = float(np.sum(np.abs(self.scan.probe) ** 2))
        self.x = preprocess(np.asarray(self.scan.diffraction, np.float32), self.manifest, probe_power=power)
        self.lit = torch.from_numpy(lit_pixels(np.abs(self.scan.probe) ** 2)).to(self.device)
        self.failures: list[str] = []
        self.report: dict = {"device": self.device, "device_name": _device_name(torch, self.cuda),
                             "torch": torch.__version__, "cupy": getattr(self.cupy, "__version__", None),
                             "small": bool(a.small), "precision": a.precision, "model": str(self.checkpoint),
                             "frames": len(self.x), "targets": TARGETS, "items": {}}

    def batch(self, n: int) -> np.ndarray:
        """``n`` preprocessed patterns (the scan's, repeated when it has fewer)."""
        reps = math.ceil(n / len(self.x))
        return np.ascontiguousarray(np.concatenate([self.x] * reps)[:n]) if reps > 1 else self.x[:n].copy()

    def on_device(self, x: np.ndarray):
        return self.torch.from_numpy(x).to(self.device).contiguous(memory_format=self.cl)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
        return bool(ok)

    def save(self, name: str, result: dict) -> None:
        self.report["items"][name] = result
        self.report["failures"] = self.failures
        self.report["wall_s"] = time.perf_counter() - self.t0
        print(f"{name}: {_summary(result)}", flush=True)
        if self.args.json is not None:
            from ptyfast.io.atomic import write_json

            write_json(self.args.json, self.report)

    def run(self, name: str, fn, *args) -> dict:
        """``fn(self, *args)`` saved as item ``name``; an exception becomes the item's error and a failure."""
        try:
            result = fn(self, *args)
        except Exception as exc:  # noqa: BLE001 - one item's error must not lose the other items' figures
            import traceback

            traceback.print_exc()
            result = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            self.failures.append(f"{name}: {result['error']}")
        self.save(name, result)
        return result

    def left_s(self) -> float:
        return math.inf if not self.args.budget else self.args.budget - (time.perf_counter() - self.t0)


def _cupy():
    try:
        import cupy

        cupy.zeros(1).sum().item()
        return cupy
    except Exception as exc:  # noqa: BLE001 - no CuPy or no device for it: stitching on the device is skipped
        print(f"CuPy unusable ({type(exc).__name__}: {exc}); device stitching skipped", file=sys.stderr)
        return None


def _device_name(torch, cuda: bool) -> str:
    if cuda:
        return torch.cuda.get_device_name(0)
    from ptyfast.machine import cpu_name

    return f"CPU: {cpu_name()}"


def _summary(result: dict) -> str:
    flat = []
    for k, v in result.items():
        if isinstance(v, dict):
            flat.append(f"{k}={{{_summary(v)}}}")
        elif isinstance(v, float):
            flat.append(f"{k}={v:.4g}")
        else:
            flat.append(f"{k}={v}")
    return ", ".join(flat)


def rate(ctx: Context, fn, patterns: int) -> float:
    """Patterns/s of ``fn()`` (``patterns`` per call): warmed up, then groups of calls of ≈ 0.1 s each,
    device-synchronised, for ``seconds`` and at least ``min_calls`` calls."""
    fn()
    ctx.sync()
    t = time.perf_counter()
    fn()
    ctx.sync()
    group = max(1, math.ceil(0.1 / max(time.perf_counter() - t, 1e-6)))
    calls, t = 0, time.perf_counter()
    while calls < ctx.sizes.min_calls or time.perf_counter() - t < ctx.sizes.seconds:
        for _ in range(group):
            fn()
        ctx.sync()
        calls += group
    return calls * patterns / (time.perf_counter() - t)


def difference(ctx: Context, got, want) -> float:
    """Relative RMS difference of (amplitude, phase) pairs as complex patches on the lit pixels (torch or numpy)."""
    torch = ctx.torch

    def patches(pair):
        a, p = (torch.as_tensor(v).to(ctx.device).float() for v in pair)
        return torch.polar(a, p)[:, ctx.lit]

    g, w = patches(got), patches(want)
    return float(torch.linalg.vector_norm(g - w) / torch.linalg.vector_norm(w).clamp_min(1e-30))


def folded(ctx: Context):
    """The model with BatchNorm folded and its layers in the precision (:mod:`ptyfast.models.inference`),
    channels-last."""
    from ptyfast.models.inference import _InPrecision, fold_batchnorm

    module = fold_batchnorm(ctx.model)
    if ctx.dtype != ctx.torch.float32:
        module = _InPrecision(module, ctx.dtype)
    return module.to(memory_format=ctx.cl).eval()


def graphed(ctx: Context, fn, static_in):
    """``run(x)``: ``fn`` captured as a CUDA graph on ``static_in`` (``x`` copied into it unless it is it); the
    outputs are the graph's static tensors."""
    torch = ctx.torch
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(static_in)

    def run(x):
        if x is not static_in:
            static_in.copy_(x)
        graph.replay()
        return static_out

    return run


def inferred(ctx: Context, module, autocast: bool = False):
    """``fn(x) → (amplitude, phase)``: ``module`` under inference mode (and autocast to the precision)."""
    torch = ctx.torch
    autocast = autocast and ctx.dtype != torch.float32

    def fn(x):
        with torch.inference_mode(), torch.autocast(ctx.device, dtype=ctx.dtype, enabled=autocast):
            return module(x)

    return fn


def device_resident(ctx: Context) -> dict:
    """Model only in the precision, input and outputs on the device, at the device batch: patterns/s and agreement per
    variant."""
    torch, b = ctx.torch, ctx.sizes.batch
    x = ctx.on_device(ctx.batch(b))
    want = inferred(ctx, ctx.model)(x)
    variants: dict = {}

    def measure(name: str, fn, **facts) -> None:
        got = fn(x)
        err = difference(ctx, got, want)
        variants[name] = {"patterns_per_s": rate(ctx, lambda: fn(x), b), "difference_vs_fp32": err,
                          "equal": ctx.check(err <= _tolerance(), f"{name} differs from fp32 by {err:.3g}"),
                          **facts}

    torch.backends.cudnn.benchmark = False
    measure("eager", inferred(ctx, ctx.model, autocast=True), cudnn_benchmark=False)
    if ctx.cuda:
        torch.backends.cudnn.benchmark = True
        measure("eager_cudnn_benchmark", inferred(ctx, ctx.model, autocast=True), cudnn_benchmark=True)
    measure("folded", inferred(ctx, ctx.folded), cudnn_benchmark=ctx.cuda)
    if ctx.cuda:
        static = x.clone(memory_format=ctx.cl)
        run = graphed(ctx, inferred(ctx, ctx.folded), static)
        got = run(static)
        err = difference(ctx, got, want)
        variants["folded_graph"] = {
            "patterns_per_s": rate(ctx, lambda: run(static), b), "difference_vs_fp32": err,
            "difference_vs_folded_eager": difference(ctx, got, inferred(ctx, ctx.folded)(x)),
            "equal": ctx.check(err <= _tolerance(), f"folded_graph differs from fp32 by {err:.3g}"),
            "cudnn_benchmark": True}
    else:
        variants["folded_graph"] = {"skipped": "CUDA graphs need a CUDA device"}
    best = max((k for k in variants if "patterns_per_s" in variants[k]), key=lambda k: variants[k]["patterns_per_s"])
    top = variants[best]["patterns_per_s"]
    return {"batch": b, "variants": variants, "best": best, "best_patterns_per_s": top,
            "target_patterns_per_s": TARGETS["device_resident_patterns_per_s"],
            "meets_target": top >= TARGETS["device_resident_patterns_per_s"]}


def _tolerance() -> float:
    from ptyfast.runtime.backends.bf16_check import BF16_TOLERANCE

    return BF16_TOLERANCE


def pinned_runner(ctx: Context, batch: int):
    """``call(x) → (amplitude, phase)`` numpy in, numpy out at ``batch``: ``x`` copied into a reused (pinned on
    CUDA) host buffer, uploaded without blocking, the folded model (a CUDA graph on CUDA) run, both outputs
    copied into reused (pinned) host buffers; the returned arrays are those buffers."""
    torch, (h, w) = ctx.torch, ctx.manifest.input_size
    pin = ctx.cuda
    host_in = torch.empty((batch, 1, h, w), pin_memory=pin)
    dev_in = torch.empty((batch, 1, h, w), device=ctx.device).contiguous(memory_format=ctx.cl)
    fn = inferred(ctx, ctx.folded)
    run = graphed(ctx, fn, dev_in) if ctx.cuda else fn
    outs = [torch.empty((batch, h, w), pin_memory=pin) for _ in range(2)]

    def call(x: np.ndarray):
        host_in.numpy()[:] = x
        dev_in.copy_(host_in, non_blocking=True)
        for buf, t in zip(outs, run(dev_in)):
            buf.copy_(t, non_blocking=True)
        ctx.sync()
        return outs[0].numpy(), outs[1].numpy()

    return call


def host_returning(ctx: Context) -> dict:
    """Model only, numpy in and numpy out, at each host batch: the shipped torch backend against the pinned
    folded path."""
    from ptyfast.runtime.backends import TorchBackend

    rows: dict = {}
    with TorchBackend(ctx.checkpoint, device=ctx.device, precision=ctx.precision) as backend:
        for b in ctx.sizes.host_batches:
            xb = ctx.batch(b)
            want = inferred(ctx, ctx.model)(ctx.on_device(xb))
            call = pinned_runner(ctx, b)
            got_backend, got_pinned = backend(xb), call(xb)
            errs = {"backend": difference(ctx, got_backend, want), "pinned": difference(ctx, got_pinned, want)}
            rows[str(b)] = {
                "backend_patterns_per_s": rate(ctx, lambda: backend(xb), b),
                "pinned_folded_patterns_per_s": rate(ctx, lambda: call(xb), b),
                "pinned": ctx.cuda, "graph": ctx.cuda,
                "backend_difference_vs_fp32": errs["backend"], "pinned_difference_vs_fp32": errs["pinned"],
                "equal": all(ctx.check(e <= _tolerance(), f"host-returning {k} at batch {b} differs by {e:.3g}")
                             for k, e in errs.items())}
            row = rows[str(b)]
            row["speedup"] = row["pinned_folded_patterns_per_s"] / row["backend_patterns_per_s"]
    target = TARGETS["host_returning_patterns_per_s"]
    best = min(max(r["backend_patterns_per_s"], r["pinned_folded_patterns_per_s"]) for r in rows.values())
    return {"batches": rows, "target_patterns_per_s": target, "meets_target": best >= target}


def stitch_on(ctx: Context, xp, patches, pos, weight, shape):
    """Object and weight map of ``patches`` overlap-added and normalised with the array module ``xp``."""
    from ptyfast.kernels import normalise, overlap_add

    num = xp.zeros(shape, xp.complex64)
    wsum = xp.zeros(shape, xp.float32)
    overlap_add(num, patches, pos, weights=weight, weight_accum=wsum)
    return normalise(num, wsum, out=num), wsum


def _timed(ctx: Context, fn, repeats: int = 5) -> float:
    """Median seconds of ``fn()`` (device-synchronised), after one warm-up call."""
    fn()
    ctx.sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ctx.sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def complex_patches(ctx: Context):
    """(name, ``patches(amp, pha)``): complex patches of torch outputs on their device with the stitcher's own
    :func:`~ptyfast.runtime.stitch.complex_patches` where it takes device arrays (``stitch.as_array``), else
    ``torch.polar`` shared through DLPack."""
    from ptyfast.kernels.memory import from_torch
    from ptyfast.runtime import stitch

    if hasattr(stitch, "as_array"):
        return "stitch.complex_patches", lambda a, p: stitch.complex_patches(stitch.as_array(a), stitch.as_array(p))
    return "torch.polar", lambda a, p: from_torch(ctx.torch.polar(a, p))


def _host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def stitching(ctx: Context) -> dict:
    """All frames' network outputs (folded, on the device) as complex patches (``torch.polar``) stitched on the
    device (CuPy; numpy in the dry run) against the numpy kernels on the same patches; then from the outputs,
    the patches made as the stitcher makes them (:func:`complex_patches`)."""
    from ptyfast.kernels.memory import from_torch
    from ptyfast.runtime.stitch import plan_stitch

    if ctx.cuda and ctx.cupy is None:
        return {"skipped": "CuPy is missing or sees no device"}
    torch, scan, b = ctx.torch, ctx.scan, ctx.sizes.batch
    plan = plan_stitch(scan.positions, scan.diffraction.shape[-1], ctx.manifest, scan.probe, align_phase=False)
    fn = inferred(ctx, ctx.folded)
    amp, pha = (torch.cat(t) for t in zip(*(fn(ctx.on_device(ctx.x[s : s + b])) for s in range(0, len(ctx.x), b))))
    xp = ctx.cupy if ctx.cupy is not None else np
    weight = xp.asarray(plan.weight)
    patches = from_torch(torch.polar(amp, pha))
    t_dev = _timed(ctx, lambda: stitch_on(ctx, xp, patches, plan.grid_pos, weight, plan.shape))
    obj = _host(stitch_on(ctx, xp, patches, plan.grid_pos, weight, plan.shape)[0])
    host = _host(patches)
    t = time.perf_counter()
    ref, _ = stitch_on(ctx, np, host, plan.grid_pos, plan.weight, plan.shape)
    t_np = time.perf_counter() - t
    diff = float(np.max(np.abs(obj - ref)))
    res = {"frames": len(ctx.x), "object_shape": list(plan.shape), "array_module": xp.__name__,
           "device_stitch_s": t_dev, "numpy_stitch_s": t_np, "speedup": t_np / t_dev, "max_abs_difference": diff,
           "relative_difference": diff / max(float(np.max(np.abs(ref))), 1e-30),
           "equal": ctx.check(diff <= TARGETS["stitch_max_abs_difference"], f"device stitching differs by {diff:.3g}"),
           "meets_target": t_dev <= TARGETS["stitch_s"], "target_s": TARGETS["stitch_s"]}
    made_by, make = complex_patches(ctx)
    res["from_outputs"] = {"patches": made_by}
    try:
        t_out = _timed(ctx, lambda: stitch_on(ctx, xp, make(amp, pha), plan.grid_pos, weight, plan.shape))
        gap = float(np.max(np.abs(_host(make(amp, pha)) - host)))
    except Exception as exc:  # noqa: BLE001 - the stitcher's patches on the device: a finding, not a crash
        res["from_outputs"]["error"] = f"{type(exc).__name__}: {exc}"[:500]
        ctx.check(False, f"{made_by} on the device: {res['from_outputs']['error']}")
        return res
    res["from_outputs"].update(s=t_out, patches_max_abs_difference=gap,
                               equal=ctx.check(gap <= 1e-5, f"{made_by} differs from torch.polar by {gap:.3g}"))
    return res


def end_to_end(ctx: Context) -> dict:
    """``run_reconstruct`` on the scan's lazy CXI file (torch in the precision, on the device) against the same
    backend's host-returning model only over the same patterns, rounds alternated; ratio = model-only s /
    end-to-end s."""
    from ptyfast.io.cxi import read_cxi
    from ptyfast.runtime.backends import open_backend
    from ptyfast.runtime.reconstruct import ReconstructJob, run_reconstruct

    backend, reason = open_backend(None, "torch", ctx.device, ctx.precision, frames=len(ctx.x))
    rows = []
    with backend:
        b = backend.default_batch
        job = ReconstructJob(backend="torch", device=ctx.device, precision=ctx.precision, batch=b)
        backend(ctx.x[:b])
        warm = 0 if ctx.args.small else 1  # a first round warms reading, stitching and the allocator up
        for _ in range(ctx.sizes.rounds + warm):
            t = time.perf_counter()
            for _ in backend.map(ctx.x[s : s + b] for s in range(0, len(ctx.x), b)):
                pass
            model_s = time.perf_counter() - t
            lazy = read_cxi(ctx.cxi)
            t = time.perf_counter()
            rec, _ = run_reconstruct(lazy, job, backend=backend, reason=reason)
            e2e_s = time.perf_counter() - t
            lazy.close()
            rows.append({"model_only_patterns_per_s": len(ctx.x) / model_s,
                         "end_to_end_patterns_per_s": len(ctx.x) / e2e_s, "ratio": model_s / e2e_s,
                         "timings_s": {k: float(v) for k, v in rec.timings.items()}})
    rows = rows[warm:]
    ratio = statistics.median(r["ratio"] for r in rows)
    ok = bool(np.all(np.isfinite(rec.object)))
    ctx.check(ok, "end to end gave a non-finite object")
    return {"backend": reason, "batch": b, "rounds": rows, "median_ratio": ratio,
            "median_model_only_patterns_per_s": statistics.median(r["model_only_patterns_per_s"] for r in rows),
            "median_end_to_end_patterns_per_s": statistics.median(r["end_to_end_patterns_per_s"] for r in rows),
            "finite_object": ok, "target_ratio": TARGETS["end_to_end_ratio"],
            "meets_target": ratio >= TARGETS["end_to_end_ratio"]}


def _ptyfast(code_before: str, args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """A whole ``ptyfast`` process (``code_before`` run first in it)."""
    code = f"{code_before}\nimport sys\nfrom ptyfast.cli import main\nsys.argv = ['ptyfast'] + {args!r}\nmain()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def _bad_run(ctx: Context, name: str, code_before: str, extra: list[str], env: dict, refused_rc,
             may_finish: bool) -> dict:
    """One run that should be refused (exit ``refused_rc(rc)``, one sentence on stderr, nothing written) or, where
    ``may_finish``, finish with its output: rc, stderr's lines, what was written."""
    with tempfile.TemporaryDirectory(prefix=f"ptyfast-{name}-") as tmp:
        out_dir = Path(tmp)
        out = out_dir / "out.h5"
        p = _ptyfast(code_before, ["reconstruct", str(ctx.cxi), "-o", str(out), "--no-png", *extra], env, out_dir)
        written = sorted(f.name for f in out_dir.iterdir())
        finished = p.returncode == 0 and out.exists()
    lines = [s for s in p.stderr.splitlines() if s.strip()]
    one_sentence = len(lines) == 1 and "Traceback" not in p.stderr
    refused = p.returncode != 0 and refused_rc(p.returncode) and one_sentence and not written
    ok = refused or (may_finish and finished)
    ctx.check(ok, f"{name}: rc {p.returncode}, {len(lines)} stderr line(s), wrote {written}")
    return {"rc": p.returncode, "stderr_lines": len(lines), "last_line": (lines or [""])[-1][-300:],
            "one_sentence": one_sentence, "written": written, "refused": refused, "finished": finished, "ok": ok}


def bad_input(ctx: Context) -> dict:
    """``--device cuda`` with no GPU visible (``CUDA_VISIBLE_DEVICES=``): exit 2, one sentence, nothing written;
    on CUDA, out of device memory at a huge batch (the process limited to ``OOM_LIMIT_MIB``): one sentence and
    nothing written, or a finished output (a fallback to a smaller batch)."""
    env = dict(os.environ, COLUMNS="250", CUDA_VISIBLE_DEVICES="")
    res = {"no_gpu": _bad_run(ctx, "no_gpu", "", ["--device", "cuda", "--backend", "torch"], env,
                              lambda rc: rc == 2, may_finish=False)}
    if ctx.cuda:
        total = ctx.torch.cuda.get_device_properties(0).total_memory
        frac = OOM_LIMIT_MIB * 2**20 / total
        env = dict(os.environ, COLUMNS="250")
        res["out_of_memory"] = _bad_run(
            ctx, "out_of_memory", f"import torch\ntorch.cuda.set_per_process_memory_fraction({frac!r})",
            ["--device", "cuda", "--backend", "torch", "--batch", str(OOM_BATCH)], env, lambda rc: True,
            may_finish=True)
        res["out_of_memory"].update(limit_mib=OOM_LIMIT_MIB, batch=OOM_BATCH)
    else:
        res["out_of_memory"] = {"skipped": "needs a CUDA device"}
    return res


def _per_copy(ctx: Context, fn, repeats: int) -> tuple[float, float]:
    """(median seconds, minor page faults) per call of ``fn`` after one warm-up call."""
    fn()
    ctx.sync()
    times, faults = [], 0
    for _ in range(repeats):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter()
        fn()
        ctx.sync()
        times.append(time.perf_counter() - t)
        faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    return statistics.median(times), faults / repeats


def copy_study(ctx: Context) -> dict:
    """One batch's fp32 output (B, H, W) to the host: ``.cpu()`` into a fresh tensor, ``.copy_()`` into a reused
    pageable buffer, into a reused pinned one; then ``.cpu()`` again with glibc keeping freed memory
    (:func:`ptyfast.allocator.keep_freed_memory`, process-wide: this item runs after the timed ones)."""
    from ptyfast.allocator import keep_freed_memory

    torch, (h, w) = ctx.torch, ctx.manifest.input_size
    rows: dict = {}
    for b in ctx.sizes.host_batches:
        out = torch.rand((b, h, w), device=ctx.device)
        pageable = torch.empty((b, h, w))
        methods = {"fresh_cpu": (lambda: out.cpu()) if ctx.cuda else (lambda: out.clone()),
                   "reused_pageable": lambda: pageable.copy_(out)}
        if ctx.cuda:
            pinned = torch.empty((b, h, w), pin_memory=True)
            methods["reused_pinned"] = lambda: pinned.copy_(out, non_blocking=True)
        row: dict = {"mib": b * h * w * 4 / 2**20}
        for name, fn in methods.items():
            s, faults = _per_copy(ctx, fn, 5)
            row[name] = {"s": s, "gib_per_s": row["mib"] / 1024 / s, "minor_faults": faults}
        if not ctx.cuda:
            row["reused_pinned"] = {"skipped": "pinned memory needs CUDA"}
        rows[str(b)] = row
    kept = keep_freed_memory()
    for b in ctx.sizes.host_batches:
        out = torch.rand((b, h, w), device=ctx.device)
        s, faults = _per_copy(ctx, (lambda: out.cpu()) if ctx.cuda else (lambda: out.clone()), 5)
        mib = rows[str(b)]["mib"]
        rows[str(b)]["fresh_cpu_keep_freed_memory"] = {"s": s, "gib_per_s": mib / 1024 / s, "minor_faults": faults}
    return {"batches": rows, "keep_freed_memory_in_force": kept}


def compiled(ctx: Context, resident: dict) -> dict:
    """``torch.compile`` of the folded model at the device batch: compile seconds, patterns/s, agreement;
    kept only when faster than the best other variant and equal."""
    torch, b, a = ctx.torch, ctx.sizes.batch, ctx.args
    if not ctx.cuda and not a.compile_on_cpu:
        return {"skipped": "torch.compile is measured on CUDA only (--compile-on-cpu to try it here)"}
    if a.no_compile:
        return {"skipped": "--no-compile"}
    if ctx.left_s() < COMPILE_MIN_S:
        return {"skipped": f"{ctx.left_s():.0f} s of the budget left (< {COMPILE_MIN_S})"}
    x = ctx.on_device(ctx.batch(b))
    fn = inferred(ctx, torch.compile(ctx.folded, mode=a.compile_mode, dynamic=False))
    t = time.perf_counter()
    try:
        fn(x)
    except Exception as exc:  # noqa: BLE001 - an optional path that does not compile here is not kept
        return {"mode": a.compile_mode, "error": f"{type(exc).__name__}: {exc}"[:500], "keep": False}
    ctx.sync()
    compile_s = time.perf_counter() - t
    err = difference(ctx, fn(x), inferred(ctx, ctx.model)(x))
    speed = rate(ctx, lambda: fn(x), b)
    equal = ctx.check(err <= _tolerance(), f"torch.compile differs from fp32 by {err:.3g}")
    faster = speed > resident.get("best_patterns_per_s", 0.0)
    return {"mode": a.compile_mode, "compile_s": compile_s, "patterns_per_s": speed, "difference_vs_fp32": err,
            "equal": equal, "faster_than_best": faster, "best_other": resident.get("best"),
            "keep": equal and faster}


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny sizes: a few frames, batch 4")
    ap.add_argument("--dry-run", action="store_true", help="--small --device cpu: the same code paths on the CPU")
    ap.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default=None,
                    help="default bf16; fp32 in the dry run on a CPU without AVX-512 BF16 or AMX (emulated bf16 "
                         "runs ≈ 30× slower there)")
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped ptynet-s)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--budget", type=positive_int, default=None,
                    help="seconds this run may take: torch.compile is skipped when less than "
                         f"{COMPILE_MIN_S} s of it are left")
    ap.add_argument("--compile-mode", default="reduce-overhead",
                    choices=("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune"))
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-on-cpu", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.dry_run:
        a.small, a.device = True, "cpu"
    if a.precision is None:
        from ptyfast.machine import cpu_flags

        a.precision = "fp32" if a.device == "cpu" and not cpu_flags() & {"avx512_bf16", "amx_bf16"} else "bf16"
    return a


def main(argv=None) -> int:
    a = parse(argv)
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print("gpu_pipeline.py: PyTorch sees no CUDA device; use --dry-run (or --device cpu) here.", file=sys.stderr)
        return 2
    ctx = Context(a)
    print(f"{ctx.report['device_name']}, torch {torch.__version__}, {len(ctx.x)} frames", flush=True)
    from ptyfast.io.cxi import write_cxi

    with tempfile.TemporaryDirectory(prefix="ptyfast-gpu-pipeline-") as tmp:
        ctx.cxi = write_cxi(Path(tmp) / "scan.cxi", ctx.scan)
        resident = ctx.run("device_resident", device_resident)
        for name, item in (("host_returning", host_returning), ("stitching", stitching),
                           ("end_to_end", end_to_end), ("bad_input", bad_input)):
            ctx.run(name, item)
    ctx.run("copy_to_host", copy_study)
    ctx.run("compile", compiled, resident)
    for failure in ctx.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if ctx.failures else 0


if __name__ == "__main__":
    sys.exit(main())
