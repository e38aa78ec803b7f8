"""Can one pattern and the known probe fix the phase without the overlaps? Per patch, against the truth: the
probe-conditioned network's output and iterative single-pattern phase retrieval with the probe held (rPIE's object
step at one position, repeated: Fresnel / keyhole CDI), from a flat start and from the network's output, as dB of
phase PSNR over a flat guess on the lit pixels (each patch's free phase offset removed). Scans: the probe
sweep's (352², 75 % raster, ±1 px jitter, 10⁶ photons, Poisson noise), 24 evenly spaced frames each. Usage::

    python benchmarks/single_pattern_retrieval.py [--measured NAME=FILE] [-o DIR]

About a minute per probe on one core. The answer it gave (docs/benchmarks.md, "Any other probe"): no — the
single-pattern iterations lower the phase below a flat guess, so a probe-agnostic phase needs the overlaps.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from probe_sweep import probes
from release_check import held_out_pairs

ITERATIONS = (10, 30, 100, 300)


def phase_gain(est: np.ndarray, truth: np.ndarray, lit: np.ndarray) -> np.ndarray:
    """Phase PSNR (dB, range of the true phase) per patch on ``lit``, each patch's offset removed."""
    offset = np.angle(np.sum(np.where(lit, truth * np.conj(est), 0), axis=(-2, -1)))
    err = np.angle(est * np.exp(1j * offset)[:, None, None])[:, lit] - np.angle(truth)[:, lit]
    span = np.ptp(np.angle(truth)[:, lit], axis=1)
    return 10 * np.log10(span**2 / np.mean(err**2, axis=1))


def single_pattern_rpie(intensity: np.ndarray, probe: np.ndarray, iterations, start=None, alpha: float = 0.1):
    """rPIE's object update at one position, repeated per pattern with the probe held: {iteration: (N, H, W)}."""
    from ptyfast.kernels import back_propagate, far_field

    amplitude = np.sqrt(intensity).astype(np.float32)
    obj = np.ones(intensity.shape, np.complex64) if start is None else start.astype(np.complex64)
    p2 = np.abs(probe) ** 2
    step = (np.conj(probe) / ((1 - alpha) * p2 + alpha * p2.max())).astype(np.complex64)
    out = {}
    for k in range(1, max(iterations) + 1):
        psi = probe * obj
        field = far_field(psi)
        field = amplitude * field / np.maximum(np.abs(field), 1e-12)
        obj = obj + step * (back_propagate(field) - psi)
        if k in iterations:
            out[k] = obj.copy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/single-pattern-retrieval"))
    ap.add_argument("--measured", action="append", default=[], help="NAME=FILE: a measured probe, e.g. the star's")
    a = ap.parse_args()
    from ptyfast.evaluation.release import object_from_images, raster_positions, simulate_scan
    from ptyfast.kernels import gather
    from ptyfast.models.preprocess import preprocess
    from ptyfast.physics.probe import lit_mask
    from ptyfast.runtime.backends import open_backend

    backend = open_backend("ptynet-s-probe-est", "onnxruntime", "cpu", "fp32")[0]
    amp_image, phase_image = held_out_pairs(1)[0]
    rows = {}
    for name, probe in probes(1, a.measured, False, 1e6).items():
        rng = np.random.default_rng(0)
        obj = object_from_images(amp_image, phase_image, (352, 352))
        scan = simulate_scan(obj, probe, raster_positions(obj.shape, probe.shape, overlap=0.75, jitter=1.0, rng=rng),
                             photons=1e6, noise=True, rng=rng)
        sel = np.linspace(0, scan.n_frames - 1, 24).round().astype(int)
        intensity = np.asarray(scan.diffraction[sel], np.float32)
        p = scan.probe.astype(np.complex64)
        truth = gather(obj.astype(np.complex64), scan.positions[sel], p.shape)
        lit = lit_mask(p)
        flat = phase_gain(np.full_like(truth, np.mean(np.abs(truth))) + 1e-6j, truth, lit)
        x = preprocess(intensity, backend.manifest, probe_power=float(np.sum(np.abs(p) ** 2)), probe=p,
                       conditioning=backend.manifest.conditioning)
        amplitude, phase = backend(x)
        network = amplitude * np.exp(1j * phase)
        t = time.perf_counter()
        from_flat = single_pattern_rpie(intensity, p, ITERATIONS)
        seconds = time.perf_counter() - t
        from_network = single_pattern_rpie(intensity, p, ITERATIONS[:3], start=network)
        row = {"network": float(np.median(phase_gain(network, truth, lit) - flat)),
               **{f"flat + {k}": float(np.median(phase_gain(v, truth, lit) - flat)) for k, v in from_flat.items()},
               **{f"network + {k}": float(np.median(phase_gain(v, truth, lit) - flat))
                  for k, v in from_network.items()},
               "ms per pattern and iteration": seconds / len(sel) / max(ITERATIONS) * 1e3}
        rows[name] = row
        print(f"{name:20s} " + "  ".join(f"{k} {v:+.2f}" for k, v in row.items()), flush=True)
    a.output.mkdir(parents=True, exist_ok=True)
    (a.output / "single_pattern_retrieval.json").write_text(json.dumps(
        {"command": "python benchmarks/single_pattern_retrieval.py " + " ".join(f"--measured {m}" for m in a.measured),
         "median over 24 patches, phase dB over flat": rows}, indent=1))


if __name__ == "__main__":
    main()
