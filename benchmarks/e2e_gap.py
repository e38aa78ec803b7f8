"""Where end to end loses to model only: the same scan and backend as ``e2e_ratio.py``, measured two ways in one
process, round after round, so that a noisy machine moves every variant alike.

    python benchmarks/e2e_gap.py --frames 1600 --rounds 6 [--overlap 0.76] [--json benchmarks/results/e2e_gap.json]

1. **Ablation** — ``run_reconstruct`` with default options, without the consistency figure, without the
   phase-offset solve, and without both, each beside a model-only pass of its round: the ratio, the extra
   CPU seconds over model only, how much longer inference took inside the run than alone (``infer − model``:
   what the reading and stitching threads cost it) and the time after the last batch (``tail``: offsets,
   blend, consistency, checks).
2. **Interference** — the model-only pass alone, and beside one helper thread replaying a stage of
   ``reconstruct`` at its pace: the reader (HDF5 read, validation, preprocessing of every 128-frame chunk),
   the stitcher (complex patches, overlap products, weight map of every batch of outputs), and two synthetic
   helpers of ≈ 10 % duty — in-cache arithmetic and a memory copy that streams through RAM. Reported: the
   helper's CPU seconds and how much longer inference took, per helper CPU second (0.5 would be a fair
   share of this 2-core machine; more means the helper also slows the inference it runs beside).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from e2e_ratio import positive_int, run_script


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=positive_int, default=1600)
    ap.add_argument("--rounds", type=positive_int, default=6)
    ap.add_argument("--overlap", type=float, default=0.76)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)

    from ptyfast import threads
    from ptyfast.bench import simulate_benchmark_scan
    from ptyfast.io.cxi import read_cxi, write_cxi
    from ptyfast.models.preprocess import preprocess
    from ptyfast.runtime.backends import open_backend
    from ptyfast.runtime.stitch import plan_stitch
    from ptyfast.runtime.reconstruct import ReconstructJob, run_reconstruct

    n_threads = threads.set_threads(None)
    scan, _ = simulate_benchmark_scan(a.frames, overlap=a.overlap)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_cxi(Path(tmp) / "scan.cxi", scan)
        backend, reason = open_backend(None, "auto", "cpu", "auto", threads=n_threads, frames=scan.n_frames)
        with backend:
            batch = backend.default_batch
            plan = plan_stitch(scan.positions, scan.frame_shape[0], backend.manifest, scan.probe, mask=scan.mask)
            x = preprocess(np.asarray(scan.diffraction, np.float32), backend.manifest, probe_power=plan.probe_power)
            outputs = list(backend.map(x[s : s + batch] for s in range(0, len(x), batch)))  # warm-up, replayed below

            def model_only() -> tuple[float, float]:
                c, t = cpu_s(), time.perf_counter()
                for _ in backend.map(x[s : s + batch] for s in range(0, len(x), batch)):
                    pass
                return time.perf_counter() - t, cpu_s() - c

            job = ReconstructJob(backend=backend.name, precision=backend.precision, threads=n_threads, batch=batch)
            variants = {"default": job, "no consistency": dataclasses.replace(job, consistency=False),
                        "no offset solve": dataclasses.replace(job, align_phase=False),
                        "neither": dataclasses.replace(job, consistency=False, align_phase=False)}
            ablation: dict = {k: [] for k in variants}
            helpers = {"none": None, "reader": reader_stage(path, backend, plan),
                       "stitcher": stitcher_stage(outputs, plan, batch), "in-cache arithmetic": synthetic("compute"),
                       "memory copy": synthetic("memory")}
            interference: dict = {k: [] for k in helpers}
            for r in range(a.rounds):
                for name, variant in variants.items():
                    model_s, model_cpu = model_only()
                    lazy = read_cxi(path)
                    c, t = cpu_s(), time.perf_counter()
                    rec, _ = run_reconstruct(lazy, variant, backend=backend, reason=reason)
                    e2e_s, e2e_cpu = time.perf_counter() - t, cpu_s() - c
                    lazy.close()
                    ablation[name].append({"ratio": model_s / e2e_s, "extra_cpu_s": e2e_cpu - model_cpu,
                                           "infer_minus_model_s": rec.timings["infer"] - model_s,
                                           "tail_s": e2e_s - rec.timings["infer"]})
                for name, helper in helpers.items():
                    interference[name].append(beside(model_only, helper))
                print(f"round {r + 1} done", flush=True)

    res = {"backend": reason, "frames": a.frames, "overlap": a.overlap, "threads": n_threads, "batch": batch,
           "rounds": a.rounds, "ablation": {}, "interference": {}}
    print(f"{reason}; {a.frames} frames, {n_threads} threads, batch {batch}; medians of {a.rounds} rounds")
    print("ablation          ratio  extra CPU-s  infer − model (s)  tail (s)")
    for name, rows in ablation.items():
        med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
        res["ablation"][name] = {"median": med, "rounds": rows}
        print(f"  {name:16s} {med['ratio']:.3f}  {med['extra_cpu_s']:10.2f}  {med['infer_minus_model_s']:16.3f}  "
              f"{med['tail_s']:.3f}")
    alone = statistics.median(w for w, _ in interference["none"])
    print(f"interference (model only alone: {alone:.3f} s)   helper CPU-s   slowdown (s)   s per helper CPU-s")
    for name, rows in list(interference.items())[1:]:
        wall = statistics.median(w for w, _ in rows)
        helper = statistics.median(h for _, h in rows)
        res["interference"][name] = {"model_only_s": wall, "helper_cpu_s": helper, "slowdown_s": wall - alone,
                                     "per_helper_cpu_s": (wall - alone) / max(helper, 1e-9)}
        print(f"  {name:22s} {helper:10.3f}   {wall - alone:+10.3f}   {(wall - alone) / max(helper, 1e-9):8.2f}")
    res["interference"]["alone_s"] = alone
    if a.json is not None:
        from ptyfast.io.atomic import write_json

        write_json(a.json, res)


def beside(run, helper) -> tuple[float, float]:
    """(wall s of ``run()``, CPU s of ``helper(stop)`` run in a thread beside it; 0 without one)."""
    if helper is None:
        return run()[0], 0.0
    stop, used = threading.Event(), [0.0]

    def work() -> None:
        t = time.thread_time()
        helper(stop)
        used[0] = time.thread_time() - t

    th = threading.Thread(target=work)
    th.start()
    try:
        wall = run()[0]
    finally:
        stop.set()
        th.join()
    return wall, used[0]


def reader_stage(path, backend, plan, pause: float = 0.15):
    """Replays reconstruct's reader: every 128-frame chunk read, validated and preprocessed, then a pause
    (about the time inference takes over a chunk)."""
    from ptyfast.io.cxi import read_cxi
    from ptyfast.models.preprocess import fit_frames, preprocess
    from ptyfast.runtime.stream import CHUNK
    from ptyfast.scan import validate_frames

    def run(stop: threading.Event) -> None:
        lazy = read_cxi(path)
        try:
            for s in range(0, lazy.n_frames, CHUNK):
                if stop.is_set():
                    return
                frames = lazy.frames(s, min(s + CHUNK, lazy.n_frames))
                validate_frames(frames, start=s, mask=lazy.mask)
                preprocess(fit_frames(frames, plan.size, plan.fit), backend.manifest, probe_power=plan.probe_power,
                           mask=plan.mask)
                time.sleep(pause)
        finally:
            lazy.close()

    return run


def stitcher_stage(outputs, plan, batch: int, pause: float = 0.04):
    """Replays reconstruct's stitching thread on recorded outputs: complex patches on the box, overlap products
    (:class:`~ptyfast.runtime.spilled_patches.SpilledPatches`), the weight map; a pause per batch."""
    from ptyfast.kernels import overlap_add
    from ptyfast.runtime.stitch import complex_patches
    from ptyfast.runtime.spilled_patches import SpilledPatches

    def run(stop: threading.Event) -> None:
        kept = SpilledPatches(plan.grid_pos + plan.box_offset, plan.solve_weight)
        wsum = np.zeros(plan.shape, np.float32)
        box_w = plan.box_weight
        try:
            for i, (amp, pha) in enumerate(outputs):
                if stop.is_set():
                    return
                kept.add(complex_patches(amp[:, plan.box[0], plan.box[1]], pha[:, plan.box[0], plan.box[1]]))
                overlap_add(wsum, np.broadcast_to(box_w, (len(amp), *box_w.shape)),
                            plan.grid_pos[i * batch : i * batch + len(amp)] + plan.box_offset)
                time.sleep(pause)
        finally:
            kept.close()

    return run


def synthetic(kind: str, burst: float = 0.005, duty: float = 0.1):
    """A helper busy ``duty`` of the time in bursts: ``compute`` — sines of an 8 kB array (stays in L1);
    ``memory`` — copies of a 64 MiB array (streams through RAM)."""
    size = 2048 if kind == "compute" else 16 * 2**20
    src = np.random.default_rng(0).random(size, dtype=np.float32)
    dst = np.empty_like(src)

    def run(stop: threading.Event) -> None:
        while not stop.is_set():
            t = time.perf_counter()
            while time.perf_counter() - t < burst:
                if kind == "compute":
                    np.sin(src, out=dst)
                else:
                    np.copyto(dst, src)
            time.sleep(burst * (1 / duty - 1))

    return run


if __name__ == "__main__":
    run_script(main, "e2e_gap.py")
