"""Figures for the shipped model's card: a held-out 50 %-overlap scan (cat faces angle95 → amplitude,
angle97 → phase, never trained on; the angle90–99 faces were the validation split), 600² object, 2 px jitter.

    python benchmarks/model_card_eval.py -o /tmp/card            # writes card.json + truth_vs_prediction.png

Rows: the network with |P|²-weighted sub-pixel stitching, the same predictions with the paper's stitching
(uniform weights, rounded positions), the network + 30 rPIE iterations, a Poisson-noise case (10⁶ photons per
frame), and the flat / blurred baselines (reference-architectures.md).
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path

import numpy as np

from ptyfast.io.atomic import write_json
from ptyfast.io.images import read_image
from ptyfast.metrics import evaluate_against_truth, truth_on_grid
from ptyfast.physics import default_probe, object_from_images, raster_positions
from ptyfast.physics.simulate import simulate_scan
from ptyfast.refine import refine_reconstruction
from ptyfast.runtime.backends import open_backend
from ptyfast.runtime.pipeline import Reconstruction, reconstruct_scan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--output", type=Path, default=Path("/tmp/card"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--overlap", type=float, default=0.5)
    args = ap.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    data = resources.files("ptyfast.data")
    with resources.as_file(data / "demo_amplitude.png") as a, resources.as_file(data / "demo_phase.png") as p:
        obj = object_from_images(read_image(a), read_image(p), (600, 600))
    rng = np.random.default_rng(7)
    probe = default_probe()
    pos = raster_positions(obj.shape, probe.shape, overlap=args.overlap, jitter=2.0, rng=rng)
    clean = simulate_scan(obj, probe, pos, photons=1e6, rng=rng)
    noisy = simulate_scan(obj, probe, pos, photons=1e6, noise=True, rng=rng)
    backend, reason = open_backend(args.model, "onnxruntime", "cpu")
    rows, recs = {}, {}
    for name, scan, weighting in (("network, |P|² stitching", clean, "probe"),
                                  ("network, paper stitching (uniform, rounded)", clean, "uniform"),
                                  ("network, Poisson noise 1e6 photons", noisy, "probe")):
        t = time.perf_counter()
        rec = reconstruct_scan(scan, backend, weighting=weighting, probe=probe)
        q, base, region = evaluate_against_truth(rec.object, rec.weight, rec.origin, obj)
        rows[name] = {**q.as_dict(), "seconds": time.perf_counter() - t,
                      "consistency": rec.consistency.error if rec.consistency else None}
        recs[name] = (rec, region)
    rec, region = recs["network, |P|² stitching"]
    res = refine_reconstruction(clean, rec.object, positions=rec.positions, probe=probe, algorithm="rpie",
                                iterations=30)
    refined = Reconstruction(object=np.asarray(res.object), weight=rec.weight, positions=rec.positions,
                             origin=rec.origin, probe=probe)
    q, base, _ = evaluate_against_truth(refined.object, refined.weight, refined.origin, obj)
    rows["network + 30 rPIE iterations"] = q.as_dict()
    for k, v in base.items():
        rows[k] = v.as_dict()
    backend.close()
    write_json(args.output / "card.json", {"backend": reason, "frames": clean.n_frames, "overlap": args.overlap,
                                           "rows": rows})
    from ptyfast.cli.cmd_demo import comparison_figure

    comparison_figure(args.output / "truth_vs_prediction.png", {"network": rec.object, "+ 30 rPIE": refined.object},
                      truth_on_grid(obj, rec.origin, rec.object.shape), region, f"held-out scan, {args.overlap:.0%} overlap: network phase PSNR "
                              f"{rows['network, |P|² stitching']['phase_psnr']:.1f} dB")
    for k, v in rows.items():
        print(f"{k:48s} phase PSNR {v['phase_psnr']:6.2f} dB  SSIM {v['phase_ssim']:.3f}  "
              f"amp PSNR {v['amplitude_psnr']:6.2f}  SSIM {v['amplitude_ssim']:.3f}")


if __name__ == "__main__":
    main()
