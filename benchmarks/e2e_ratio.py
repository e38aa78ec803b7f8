"""End to end vs model only, side by side: on a shared, noisy machine one pass of each says little, so this
alternates them in one process, round after round, on the same patterns, and reports the per-round ratios.

    python benchmarks/e2e_ratio.py --frames 1600 --rounds 8 [--threads 1] [--backend onnxruntime --precision fp32]
                                   [--batch B] [--overlap 0.76] [--plain-torch] [--json benchmarks/results/e2e_ratio.json]

The backend is what ``reconstruct`` picks for a scan of ``--frames`` (``--backend auto --precision auto``: torch
bf16 from 1,500 frames on a CPU with AVX-512 BF16 or AMX, else ONNX Runtime fp32) unless given.
Each round: (1) model only — the opened backend over the scan's 1,600 preprocessed patterns in batches of the
backend's default size, run as reconstruct runs them (``Backend.map``: on the CPU several batches side by side;
wall time of the inference only); (2) end to end — ``run_reconstruct`` on the lazy
CXI file with default options (reading, preprocessing, inference, stitching with the phase-offset solve, the
consistency figure; wall time from the first read to the finished object, the model already loaded, as for
the model-only pass). With ``--plain-torch`` each round also times (3) a plain PyTorch loop over the same patterns
— the checkpoint as trained, eager, bf16 autocast, channels-last, one batch at a time on every thread — the
reference the issue sets the end-to-end goal against. The scan is ``ptyfast bench``'s (held-out cat faces, default probe, 75 % overlap raster:
the confined probe's lit discs overlap, so the phase-offset solve does its real work).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def positive_int(text: str) -> int:
    """argparse type: a whole number ≥ 1 (else argparse's one-line error and exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ≥ 1")
    return value


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=positive_int, default=1600)
    ap.add_argument("--rounds", type=positive_int, default=5)
    ap.add_argument("--threads", type=positive_int, default=None, help="default: the cores this process may use")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--precision", default="auto", help="auto: what reconstruct picks for a scan of --frames")
    ap.add_argument("--batch", type=positive_int, default=None, help="default: the backend's")
    ap.add_argument("--overlap", type=float, default=0.75, help="of the 128² window (the bench scan's by default)")
    ap.add_argument("--plain-torch", action="store_true", help="also time a plain torch bf16 channels-last loop")
    ap.add_argument("--whole-process", action="store_true",
                    help="also time a whole `ptyfast reconstruct` process on the scan's CXI file each round "
                         "(start-up, imports, model loading and writing included)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)

    from ptyfast import threads
    from ptyfast.bench import simulate_benchmark_scan
    from ptyfast.io.cxi import read_cxi, write_cxi
    from ptyfast.models.preprocess import preprocess
    from ptyfast.runtime.backends import open_backend
    from ptyfast.runtime.reconstruct import ReconstructJob, run_reconstruct

    n_threads = threads.set_threads(a.threads)
    scan, _ = simulate_benchmark_scan(a.frames, overlap=a.overlap)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_cxi(Path(tmp) / "scan.cxi", scan)
        backend, reason = open_backend(None, a.backend, "cpu", a.precision, threads=n_threads, frames=scan.n_frames)
        with backend:
            batch = a.batch or backend.default_batch
            power = float(np.sum(np.abs(scan.probe) ** 2))
            x = preprocess(np.asarray(scan.diffraction, np.float32), backend.manifest, probe_power=power)
            backend(x[:batch])  # warm-up
            job = ReconstructJob(backend=backend.name, precision=backend.precision, threads=n_threads, batch=batch)
            plain = plain_torch_loop(x, batch, n_threads) if a.plain_torch else None
            rows = []
            for r in range(a.rounds):
                t = time.perf_counter()
                for _ in backend.map(x[s : s + batch] for s in range(0, len(x), batch)):
                    pass
                model_s = time.perf_counter() - t
                lazy = read_cxi(path)
                t = time.perf_counter()
                rec, _ = run_reconstruct(lazy, job, backend=backend, reason=reason)
                e2e_s = time.perf_counter() - t
                lazy.close()
                rows.append({"round": r + 1, "model_only_patterns_per_s": len(x) / model_s,
                             "end_to_end_patterns_per_s": len(x) / e2e_s, "ratio": model_s / e2e_s,
                             "timings_s": {k: float(v) for k, v in rec.timings.items()}})
                extra = ""
                if a.whole_process:
                    whole_s = whole_process(path, Path(tmp) / "whole.h5", backend, batch, n_threads)
                    rows[-1].update(whole_process_patterns_per_s=len(x) / whole_s, whole_process_ratio=model_s / whole_s)
                    extra += f"; whole process {len(x) / whole_s:6.0f} patterns/s → {model_s / whole_s:.2f}×"
                if plain is not None:
                    plain_s = plain()
                    rows[-1].update(plain_torch_patterns_per_s=len(x) / plain_s, ratio_to_plain_torch=plain_s / e2e_s)
                    extra += f"; plain torch loop {len(x) / plain_s:6.0f} patterns/s → {plain_s / e2e_s:.2f}× of it"
                print(f"round {r + 1}: model only {len(x) / model_s:6.0f} patterns/s, end to end "
                      f"{len(x) / e2e_s:6.0f} patterns/s → {model_s / e2e_s:.2f}×{extra}", flush=True)
    ratios = [row["ratio"] for row in rows]
    res = {"backend": reason, "precision": backend.precision, "overlap": a.overlap, "threads": n_threads, "batch": batch,
           "frames": len(x), "rounds": rows, "median_ratio": statistics.median(ratios),
           "median_model_only": statistics.median(r["model_only_patterns_per_s"] for r in rows),
           "median_end_to_end": statistics.median(r["end_to_end_patterns_per_s"] for r in rows)}
    print(f"{backend.name} {backend.precision}, {n_threads} thread(s), batch {batch}, {len(x)} frames: median model only "
          f"{res['median_model_only']:.0f}, end to end {res['median_end_to_end']:.0f} patterns/s; ratio median "
          f"{res['median_ratio']:.2f}× (rounds {min(ratios):.2f}–{max(ratios):.2f}×)")
    if a.whole_process:
        res["median_whole_process"] = statistics.median(r["whole_process_patterns_per_s"] for r in rows)
        res["median_whole_process_ratio"] = statistics.median(r["whole_process_ratio"] for r in rows)
        print(f"whole `ptyfast reconstruct` process: median {res['median_whole_process']:.0f} patterns/s, "
              f"{res['median_whole_process_ratio']:.2f}× of model only")
    if plain is not None:
        res["median_plain_torch"] = statistics.median(r["plain_torch_patterns_per_s"] for r in rows)
        res["median_ratio_to_plain_torch"] = statistics.median(r["ratio_to_plain_torch"] for r in rows)
        print(f"plain torch bf16 channels-last loop: median {res['median_plain_torch']:.0f} patterns/s; end to end "
              f"{res['median_ratio_to_plain_torch']:.2f}× of it")
    if a.json is not None:
        from ptyfast.io.atomic import write_json

        write_json(a.json, res)


def whole_process(scan: Path, out: Path, backend, batch: int, threads: int) -> float:
    """Wall seconds of one `ptyfast reconstruct` process on ``scan`` with the backend, precision, batch and threads
    of the in-process runs (no PNGs; the output removed after)."""
    import subprocess

    cmd = [sys.executable, "-m", "ptyfast", "reconstruct", str(scan), "-o", str(out), "--no-png",
           "--backend", backend.name, "--precision", backend.precision, "--batch", str(batch),
           "--threads", str(threads)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    elapsed = time.perf_counter() - t
    out.unlink(missing_ok=True)
    return elapsed


def plain_torch_loop(x: np.ndarray, batch: int, threads: int):
    """A callable timing one pass of the shipped checkpoint over ``x`` as plain PyTorch runs it: eager, bf16
    autocast, channels-last, each batch on all ``threads`` (torch's intra-op threads set for the pass)."""
    import torch

    from ptyfast.allocator import keep_freed_memory
    from ptyfast.models.checkpoint import load_checkpoint
    from ptyfast.models.pretrained import resolve_model

    keep_freed_memory()  # as the backend does: fresh pages per batch would handicap the reference
    model, _ = load_checkpoint(resolve_model(None).checkpoint)
    model = model.eval().to(memory_format=torch.channels_last)

    def run() -> float:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                model(torch.from_numpy(x[:batch]).contiguous(memory_format=torch.channels_last))  # warm
                t = time.perf_counter()
                for s in range(0, len(x), batch):
                    amp, pha = model(torch.from_numpy(x[s : s + batch]).contiguous(memory_format=torch.channels_last))
                    amp.float().numpy(), pha.float().numpy()
                return time.perf_counter() - t
        finally:
            torch.set_num_threads(before)

    return run


def run_script(main, name: str) -> None:
    """``main()``, with an input ptyfast refuses (e.g. an --overlap the scan simulator cannot make) said in one
    sentence and exit 2 instead of a traceback."""
    from ptyfast.errors import PtyfastError

    try:
        main()
    except PtyfastError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    run_script(main, "e2e_ratio.py")
