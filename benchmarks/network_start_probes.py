"""Does a short physics refinement carry the probe where the network does not? Held-out probes × held-out faces
(the probe sweep's scans: 352², 75 % raster, ±1 px jitter, 10⁶ photons, the probe known): the stitched network
object (``ptynet-s`` for the bundled probe, the probe-conditioned model for the others, as ``reconstruct``
chooses) and rPIE with the probe held from it and from a flat object, scored after 1–20 iterations (or
``--iterations``), as dB over a flat guess (phase, amplitude), with the seconds each takes. ``--batch`` and
``--alpha`` (each repeatable) add rows for rPIE's mini-batch size (1: sequential, 0: all positions at once) and
its α. Usage::

    python benchmarks/network_start_probes.py [--pairs 1] [--per-kind 1] [--measured NAME=FILE] [-o DIR]
                                              [--batch 1 --batch 16 --batch 0] [--alpha 0.1] [--iterations 40]

About 2 minutes per probe, pair and setting on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from probe_sweep import probes
from release_check import held_out_pairs

CHECKPOINTS = (1, 2, 3, 5, 10, 20, 40, 100)


def gains(q, flat) -> list[float]:
    return [q.phase_psnr - flat.phase_psnr, q.amplitude_psnr - flat.amplitude_psnr]


def one_scan(backend, probe, amp_image, phase_image, seed: int, *, iterations: int = 20,
             settings=((None, None),)) -> dict:
    from ptyfast.evaluation.release import object_from_images, raster_positions, simulate_scan
    from ptyfast.metrics import evaluate_against_truth
    from ptyfast.refine import refine
    from ptyfast.runtime.reconstruct import ReconstructJob, run_reconstruct

    rng = np.random.default_rng(seed)
    obj = object_from_images(amp_image, phase_image, (352, 352))
    pos = raster_positions(obj.shape, probe.shape, overlap=0.75, jitter=1.0, rng=rng)
    scan = simulate_scan(obj, probe, pos, photons=1e6, noise=True, rng=rng)
    t = time.perf_counter()
    rec, _ = run_reconstruct(scan, ReconstructJob(consistency=False, allow_probe_mismatch=True), backend=backend)
    row = {"frames": scan.n_frames, "network_s": time.perf_counter() - t}
    q, base, _ = evaluate_against_truth(rec.object, rec.weight, rec.origin, obj)
    row["network"] = gains(q, base["flat"])
    for batch, alpha in settings:
        tag = "" if batch is None and alpha is None else f" (batch {batch or 'all'}, alpha {alpha})"
        for start in ("network", "flat"):
            scores = {}

            def watch(it, current, scores=scores):
                if it + 1 in CHECKPOINTS and it + 1 <= iterations:
                    scores[it + 1] = gains(evaluate_against_truth(np.asarray(current), rec.weight, rec.origin,
                                                                  obj)[0], base["flat"])

            t = time.perf_counter()
            refine(scan, init=rec.object if start == "network" else "flat", positions=rec.positions,
                   probe=scan.probe, algorithm="rpie", iterations=iterations, update_probe=False, watch=watch,
                   batch=None if batch is None else (batch or scan.n_frames), alpha=alpha)
            row[f"{start} + rPIE{tag}"] = scores
            row[f"{start} + {iterations} rPIE s{tag}"] = time.perf_counter() - t  # scoring included
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/network-start-probes"))
    ap.add_argument("--pairs", type=int, default=1)
    ap.add_argument("--per-kind", type=int, default=1)
    ap.add_argument("--measured", action="append", default=[], help="NAME=FILE: a measured probe, e.g. the star's")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--batch", type=int, action="append", default=None,
                    help="rPIE mini-batch (1 sequential, 0 all positions); repeatable")
    ap.add_argument("--alpha", type=float, action="append", default=None, help="rPIE alpha; repeatable")
    a = ap.parse_args()
    settings = ([(b, al) for b in (a.batch or [None]) for al in (a.alpha or [None])]
                if a.batch or a.alpha else [(None, None)])
    from ptyfast.runtime.backends import open_backend

    backends = {m: open_backend(m, "onnxruntime", "cpu", "fp32")[0] for m in ("ptynet-s", "ptynet-s-probe-est")}
    rows = {}
    for name, probe in probes(a.per_kind, a.measured, False, 1e6).items():
        backend = backends["ptynet-s" if name == "bundled default" else "ptynet-s-probe-est"]
        for k, (amp, phase) in enumerate(held_out_pairs(a.pairs)):
            rows[f"{name} | pair {k}"] = row = one_scan(backend, probe, amp, phase, seed=k,
                                                        iterations=a.iterations, settings=settings)
            for key in (r for r in row if isinstance(row[r], dict)):
                scores = " ".join(f"{it}: {v[0]:+.2f}" for it, v in row[key].items())
                print(f"{name:18s} pair {k}: network {row['network'][0]:+.2f} dB phase; {key}: {scores}", flush=True)
    a.output.mkdir(parents=True, exist_ok=True)
    (a.output / "network_start_probes.json").write_text(json.dumps(
        {"command": "python benchmarks/network_start_probes.py " + " ".join(
            [f"--pairs {a.pairs}", f"--per-kind {a.per_kind}", *(f"--measured {m}" for m in a.measured),
             f"--iterations {a.iterations}", *(f"--batch {b}" for b in a.batch or []),
             *(f"--alpha {al}" for al in a.alpha or [])]),
         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
