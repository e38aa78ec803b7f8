"""rPIE's batching, side by side in one run: sequential (one position per step), disjoint batches (windows that
do not overlap on the probe, updated together) and random mini-batches, on

1. the probe sweep's scans (352², 75 % raster, ±1 px jitter, 10⁶ photons; the probe known and held, flat start):
   phase dB over a flat guess after 10 / 20 / 40 iterations, and milliseconds per frame and iteration;
2. the real Siemens star (``refine`` defaults: probe updated with the trial, 60 iterations): final data error,
   seconds per iteration, and phase agreement (dB) with the sequential result;
3. the 1,600-frame bench scan (held probe, 10 iterations): seconds per iteration.

    python benchmarks/refine_batching.py [--star runs/star/star.cxi] [--batch 16] [-o DIR]

Timings exclude the scoring (``RefineResult.timings``). About 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from probe_sweep import probes
from release_check import held_out_pairs

SCORED = (10, 20, 40)


def modes(batch: int) -> dict[str, dict]:
    return {"sequential": {}, "disjoint": {"batching": "disjoint"}, f"random {batch}": {"batch": batch}}


def sweep(batch: int, measured: list[str]) -> dict:
    from ptyfast.evaluation.release import object_from_images, raster_positions, simulate_scan
    from ptyfast.metrics import evaluate_against_truth
    from ptyfast.refine import refine
    from ptyfast.refine.output import result_weight

    amp, phase = held_out_pairs(1)[0]
    rows = {}
    for name, probe in probes(1, measured, False, 1e6).items():
        rng = np.random.default_rng(0)
        obj = object_from_images(amp, phase, (352, 352))
        scan = simulate_scan(obj, probe, raster_positions(obj.shape, probe.shape, overlap=0.75, jitter=1.0, rng=rng),
                             photons=1e6, noise=True, rng=rng)
        rows[name] = {}
        for label, kw in modes(batch).items():
            kept = {}

            def watch(it, current, kept=kept):
                if it in SCORED:
                    kept[it] = np.array(current)

            r = refine(scan, init="flat", probe=scan.probe, iterations=max(SCORED), update_probe=False, watch=watch,
                       **kw)
            weight = result_weight(r)
            gains = {}
            for it, o in kept.items():
                q, base, _ = evaluate_against_truth(o, weight, (0.0, 0.0), obj)
                gains[it] = round(q.phase_psnr - base["flat"].phase_psnr, 2)
            ms = float(np.median(r.timings)) / scan.n_frames * 1e3
            rows[name][label] = {"phase_db_over_flat": gains, "ms_per_frame_iteration": round(ms, 3)}
            print(f"{name:20s} {label:12s} {gains}  {ms:.3f} ms/frame/it", flush=True)
    return rows


def star(path: Path, batch: int) -> dict:
    from ptyfast.io.convert import load_any
    from ptyfast.metrics import evaluate_against_reference
    from ptyfast.refine import refine
    from ptyfast.refine.output import result_weight

    out, ref = {}, None
    with load_any(path) as scan:
        for label, kw in modes(batch).items():
            r = refine(scan, init="flat", iterations=60, **kw)
            o, w = np.asarray(r.object), result_weight(r)
            row = {"final_error": float(r.errors[-1]), "s_per_iteration": float(np.median(r.timings)),
                   "probe_trial": r.meta.get("probe_trial", {}).get("kept")}
            if ref is None:
                ref = (o, w)
            else:
                q, _, _ = evaluate_against_reference(o, w, (0.0, 0.0), ref[0], ref[1])
                row["phase_agreement_with_sequential_db"] = round(q.phase_psnr, 2)
            out[label] = row
            print(f"star {label:12s} {row}", flush=True)
    return out


def large(batch: int) -> dict:
    from ptyfast.bench_cases import simulate_benchmark_scan
    from ptyfast.refine import refine

    scan, _ = simulate_benchmark_scan(1600)
    out = {}
    for label, kw in modes(batch).items():
        r = refine(scan, init="flat", iterations=10, update_probe=False, **kw)
        out[label] = {"s_per_iteration": float(np.median(r.timings)), "final_error": float(r.errors[-1])}
        print(f"1,600 frames {label:12s} {out[label]}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/refine-batching"))
    ap.add_argument("--star", type=Path, default=Path("runs/star/star.cxi"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--measured", action="append", default=[], help="NAME=FILE: a measured probe")
    a = ap.parse_args()
    res = {"command": "python benchmarks/refine_batching.py " + " ".join(
        [f"--star {a.star}", f"--batch {a.batch}", *(f"--measured {m}" for m in a.measured)]),
        "sweep": sweep(a.batch, a.measured), "large": large(a.batch)}
    if a.star.exists():
        res["star"] = star(a.star, a.batch)
    a.output.mkdir(parents=True, exist_ok=True)
    (a.output / "refine_batching.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
