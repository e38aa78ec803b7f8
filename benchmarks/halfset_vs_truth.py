"""Is half-set agreement a fair judge of rPIE settings? On simulated scans (where the truth is known) rank α/β both
by the agreement between the even- and odd-frame halves (what ``refine_settings_star.py`` measures on the real
star, which has no truth) and by the full scan's PSNR against the truth. Same settings as the star run: flat start,
probe updates from iteration 2 with the trial, a blurred starting probe (the star's file holds a guess). Usage::

    python benchmarks/halfset_vs_truth.py [--pairs 2] [--alphas 0.1,0.25,0.5,1.0] [--iterations 60] [-o DIR]

About 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ptyfast.errors import InputError
from ptyfast.metrics import evaluate_against_reference
from ptyfast.physics import raster_positions
from ptyfast.physics.simulate import simulate_scan
from ptyfast.refine import refine
from ptyfast.refine.output import result_weight

from raster_pathology import held_out_object, probes, score


def agreement(a, b) -> dict:
    """Phase / amplitude PSNR of half ``a`` against half ``b`` on the pixels ``b`` covers (both on the scan's
    grid, origin (0, 0)), as ``ptyfast evaluate A --reference B`` computes it."""
    try:
        q, _, _ = evaluate_against_reference(np.asarray(a.object), result_weight(a), (0.0, 0.0),
                                             np.asarray(b.object), result_weight(b))
    except InputError:  # the halves' well-lit areas do not meet (a probe that drifted off the window)
        return {"phase_psnr": None, "amplitude_psnr": None}
    return {"phase_psnr": q.phase_psnr, "amplitude_psnr": q.amplitude_psnr}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/halfset-vs-truth"))
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--alphas", default="0.1,0.25,0.5,1.0")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--photons", type=float, default=4.6e5, help="per frame (the star's mean counts)")
    a = ap.parse_args()
    rows = []
    for pair in range(a.pairs):
        obj = held_out_object(pair)
        rng = np.random.default_rng(pair)
        pos = raster_positions(obj.shape, (128, 128), overlap=0.75, jitter=2.0, rng=rng)
        for start_name, start in probes().items():
            if start_name == "20 % wider":
                continue
            scan = simulate_scan(obj, probes()["exact"], pos, photons=a.photons, noise=True, rng=rng)
            halves = [scan.select(np.arange(k, scan.n_frames, 2)) for k in (0, 1)]
            for alpha in (float(v) for v in a.alphas.split(",")):
                common = dict(init="flat", iterations=a.iterations, probe=start, probe_start=2, alpha=alpha, beta=alpha)
                full = score(refine(scan, **common), scan)
                h = [refine(s, positions=s.positions, **common) for s in halves]
                row = {"pair": pair, "start_probe": start_name, "alpha": alpha, "truth": full,
                       "halves": agreement(h[0], h[1])}
                rows.append(row)
                print(f"{pair} {start_name:12s} α=β={alpha:<5} truth phase {full['phase_psnr']:.2f} amp "
                      f"{full['amplitude_psnr']:.2f} | halves agree phase {row['halves']['phase_psnr']} "
                      f"amp {row['halves']['amplitude_psnr']}", flush=True)
    a.output.mkdir(parents=True, exist_ok=True)
    (a.output / "halfset_vs_truth.json").write_text(json.dumps(
        {"command": f"python benchmarks/halfset_vs_truth.py --pairs {a.pairs} --alphas {a.alphas} "
                    f"--iterations {a.iterations}", "photons": a.photons, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
