"""rPIE's α/β judged against a ground truth (the complement of refine_settings_star.py, which has none): held-out
face pairs, 75 % raster with ±2 px jitter, 10⁶ photons, the exact probe held, flat start; phase / amplitude PSNR
against the truth on covered pixels and the final data error after each iteration count. Usage::

    python benchmarks/refine_alpha_truth.py [--pairs 2] [--alphas 0.1,0.25,0.5] [--iterations 60,200] [-o DIR]

About 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ptyfast.physics import default_probe, raster_positions
from ptyfast.physics.simulate import simulate_scan
from ptyfast.refine import refine

from raster_pathology import held_out_object, score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/refine-alpha-truth"))
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--alphas", default="0.1,0.25,0.5")
    ap.add_argument("--iterations", default="60,200")
    a = ap.parse_args()
    alphas = [float(v) for v in a.alphas.split(",")]
    counts = [int(v) for v in a.iterations.split(",")]
    rows = []
    for pair in range(a.pairs):
        obj = held_out_object(pair)
        rng = np.random.default_rng(pair)
        pos = raster_positions(obj.shape, (128, 128), overlap=0.75, jitter=2.0, rng=rng)
        scan = simulate_scan(obj, default_probe(), pos, photons=1e6, noise=True, rng=rng)
        for alpha in alphas:
            for n in counts:
                s = score(refine(scan, init="flat", iterations=n, alpha=alpha, beta=alpha, update_probe=False), scan)
                rows.append({"pair": pair, "alpha": alpha, "iterations": n, **s})
                print(f"pair {pair} α = β = {alpha}: {n} iterations phase {s['phase_psnr']:.2f} dB, amplitude "
                      f"{s['amplitude_psnr']:.2f} dB, data error {s['error']:.5f}", flush=True)
    a.output.mkdir(parents=True, exist_ok=True)
    out = {"command": f"python benchmarks/refine_alpha_truth.py --pairs {a.pairs} --alphas {a.alphas} "
                      f"--iterations {a.iterations}", "rows": rows}
    (a.output / "refine_alpha_truth.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
