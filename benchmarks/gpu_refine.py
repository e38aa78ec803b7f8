"""rPIE on the Tike Siemens star with CuPy arrays (CUDA kernels) against the numpy path, one process.

Same scan, settings and seed on both (α = 0.5, batch 16, probe updates on, a flat start): the per-iteration
errors must agree to float32 rounding (the two FFT libraries round differently; a wrong kernel shows as a
different curve, not a last digit), and the seconds per iteration are quoted side by side. Then CuPy again with
``batching="disjoint"`` (windows that do not overlap on the probe updated together): its error and speed. Needs CuPy and a
CUDA device; says so and exits 2 otherwise.

Run:  python benchmarks/gpu_refine.py [--iterations 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _star import STAR, load_star  # noqa: E402
from e2e_ratio import positive_int  # noqa: E402


def run(scan, xp, iterations: int, batch: int | None, batching: str = "random"):
    from ptyfast.refine import refine

    r = refine(scan, init="flat", algorithm="rpie", iterations=iterations, alpha=0.5, batch=batch,
               update_probe=True, probe_start=0, seed=0, xp=xp, batching=batching)
    obj = r.object.get() if hasattr(r.object, "get") else np.asarray(r.object)
    return r, obj


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=positive_int, default=20)
    ap.add_argument("--batch", type=positive_int, default=16)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    try:
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception as exc:  # noqa: BLE001 - no CuPy / no device: one sentence
        print(f"gpu_refine: needs CuPy and a CUDA device ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    if not STAR.exists():
        print(f"gpu_refine: {STAR} not present", file=sys.stderr)
        return 2
    scan = load_star()
    run(scan, cupy, 2, a.batch)  # warm-up: NVRTC compilation, cuFFT plans
    rg, og = run(scan, cupy, a.iterations, a.batch)
    rc, oc = run(scan, np, a.iterations, a.batch)
    rd, _ = run(scan, cupy, a.iterations, None, "disjoint")  # windows not overlapping on the probe, per batch
    diff = float(np.linalg.norm(og - oc) / np.linalg.norm(oc))
    s_gpu, s_cpu = float(np.median(rg.timings[1:])), float(np.median(rc.timings[1:]))
    report = {
        "gpu": name, "frames": scan.n_frames, "iterations": a.iterations, "batch": a.batch, "alpha": 0.5,
        "errors_cupy": [float(e) for e in rg.errors], "errors_numpy": [float(e) for e in rc.errors],
        "max_error_curve_difference": float(np.max(np.abs(np.asarray(rg.errors) - rc.errors) / rc.errors)),
        "object_relative_difference": diff,
        "s_per_iteration_cupy": s_gpu, "s_per_iteration_numpy": s_cpu, "speed_ratio": s_cpu / s_gpu,
        "disjoint_cupy": {"errors": [float(e) for e in rd.errors], "s_per_iteration": float(np.median(rd.timings[1:]))},
    }
    print(f"rPIE star {scan.n_frames} frames, batch {a.batch}, {a.iterations} iterations on {name}")
    print(f"  error after {a.iterations}: cupy {rg.errors[-1]:.4f}  numpy {rc.errors[-1]:.4f}  "
          f"(largest relative gap per iteration {report['max_error_curve_difference']:.2e}; objects differ "
          f"{diff:.2e} relative)")
    print(f"  s/iteration: cupy {s_gpu:.4f}  numpy {s_cpu:.3f}  ratio {s_cpu / s_gpu:.1f}x")
    print(f"  cupy with --batching disjoint: error after {a.iterations} {rd.errors[-1]:.4f}, "
          f"{report['disjoint_cupy']['s_per_iteration']:.4f} s/iteration")
    if a.json:
        from ptyfast.io.atomic import write_json

        write_json(a.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
