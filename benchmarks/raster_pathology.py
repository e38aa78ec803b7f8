"""Does refine's default probe update ever end worse than holding the probe? Raster (two jitters) and Fermat
scans of held-out images, probe exact or perturbed (blurred; 20 % too wide), flat start.

For each case: phase/amplitude PSNR of the object against the truth (covered pixels) and the final data error,
for the default (probe updated from ``--probe-start`` with the probe trial), the probe held, and the probe
updated without the trial (what the trial guards against). Also records whether ``raster_lattice`` calls the
path regular. Usage::

    python benchmarks/raster_pathology.py [-o benchmarks/results/raster-pathology] [--iterations 60]

Held-out cat faces from ../shared/data (or $PTYFAST_SHARED_DATA), else the bundled pair; about 10 minutes
on 2 cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from ptyfast.metrics import evaluate_against_truth
from ptyfast.physics import default_probe, fermat_positions, raster_positions
from ptyfast.physics.objects import object_from_images
from ptyfast.physics.scanpath import raster_lattice
from ptyfast.physics.simulate import simulate_scan
from ptyfast.refine import refine
from ptyfast.refine.output import result_weight

from release_check import held_out_pairs  # the held-out cat faces (or the bundled pair) in one place

HERE = Path(__file__).resolve().parent.parent


def held_out_object(pair: int, size: int = 300) -> np.ndarray:
    """Held-out pair ``pair`` (release check's images) as a (size, size) object, the training ranges."""
    amp, phase = held_out_pairs(pair + 1)[pair]
    return object_from_images(amp, phase, (size, size)).astype(np.complex64)


def probes() -> dict[str, np.ndarray]:
    p = default_probe()
    blurred = ndimage.gaussian_filter(p.real, 2) + 1j * ndimage.gaussian_filter(p.imag, 2)
    zoom = ndimage.zoom(p.real, 1.2, order=1) + 1j * ndimage.zoom(p.imag, 1.2, order=1)
    c = (zoom.shape[0] - p.shape[0]) // 2
    wide = zoom[c : c + p.shape[0], c : c + p.shape[1]]
    return {"exact": p, "blurred σ=2": blurred.astype(np.complex64), "20 % wider": wide.astype(np.complex64)}


def score(result, scan) -> dict:
    q, _, _ = evaluate_against_truth(np.asarray(result.object), result_weight(result), (0.0, 0.0), scan.truth)
    return {"phase_psnr": q.phase_psnr, "amplitude_psnr": q.amplitude_psnr, "error": float(result.errors[-1]),
            "kept": result.meta.get("probe_trial", {}).get("kept")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=HERE / "benchmarks/results/raster-pathology")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--pairs", type=int, default=2)
    a = ap.parse_args()
    rows = []
    for pair in range(a.pairs):
        obj = held_out_object(pair)
        rng = np.random.default_rng(pair)
        paths = {"raster ±2 px": raster_positions(obj.shape, (128, 128), overlap=0.75, jitter=2.0, rng=rng),
                 "raster ±8 px": raster_positions(obj.shape, (128, 128), overlap=0.75, jitter=8.0, rng=rng),
                 "fermat ±2 px": fermat_positions(obj.shape, (128, 128), overlap=0.75, jitter=2.0, rng=rng)}
        for path, pos in paths.items():
            scan = simulate_scan(obj, default_probe(), pos, photons=1e6, noise=True, rng=rng)
            lattice = raster_lattice(pos)
            for name, start in probes().items():
                common = dict(init="flat", iterations=a.iterations, probe=start, probe_start=2)
                row = {"pair": pair, "path": path, "frames": len(pos), "probe": name,
                       "lattice_jitter": None if lattice is None else lattice["jitter"],
                       "default": score(refine(scan, **common), scan),
                       "held": score(refine(scan, **{**common, "probe_start": 0}, update_probe=False), scan),
                       "updated, no trial": score(refine(scan, **common, probe_trial=0), scan)}
                rows.append(row)
                d, h, u = row["default"], row["held"], row["updated, no trial"]
                print(f"{pair} {path:13s} {name:12s} phase default {d['phase_psnr']:.2f} held {h['phase_psnr']:.2f} "
                      f"no-trial {u['phase_psnr']:.2f} | error {d['error']:.4g} {h['error']:.4g} {u['error']:.4g} "
                      f"kept {d['kept']}", flush=True)
    a.output.mkdir(parents=True, exist_ok=True)
    worse = [r for r in rows if r["default"]["error"] > r["held"]["error"] * (1 + 1e-6)
             or r["default"]["phase_psnr"] < r["held"]["phase_psnr"] - 0.05]
    out = {"command": f"python benchmarks/raster_pathology.py --iterations {a.iterations} --pairs {a.pairs}",
           "rows": rows, "default_worse_than_held": len(worse)}
    (a.output / "raster_pathology.json").write_text(json.dumps(out, indent=2))
    print(f"default worse than held (error or phase > 0.05 dB) in {len(worse)} of {len(rows)} cases")


if __name__ == "__main__":
    main()
