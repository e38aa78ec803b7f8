"""Whole ``ptyfast reconstruct`` processes per backend, alternated, on simulated scans: wall and CPU seconds.

What ``--backend auto`` should pick is a question about whole processes (imports, model load, CUDA start-up, read,
stitch, write), so this runs the CLI itself, one backend after the other in each round, and prints each run's
``backend:`` line beside its figures.

Run:  python benchmarks/reconstruct_race.py [--frames 1600 4096] [--backends onnxruntime torch auto] [--rounds 2]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from e2e_ratio import positive_int


def child_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=positive_int, nargs="+", default=[1600, 4096],
                    help="square rasters: n is rounded to k²")
    ap.add_argument("--backends", nargs="+", default=["onnxruntime", "torch", "auto"])
    ap.add_argument("--rounds", type=positive_int, default=2)
    a = ap.parse_args()
    env = dict(os.environ, COLUMNS="250")  # one line per message
    with tempfile.TemporaryDirectory() as tmp:
        scans = {}
        for n in a.frames:
            side = math.isqrt(n) * 32 + 128  # 75 % overlap of 128² frames: a 32-px step (≈ n frames)
            scans[n] = Path(tmp, f"s{n}.cxi")
            p = subprocess.run(["ptyfast", "simulate", "-o", str(scans[n]), "--size", str(side), "--random-object",
                                "--no-noise"], capture_output=True, text=True, env=env)
            if p.returncode != 0:
                why = (p.stderr.strip().splitlines() or ["no message"])[-1]
                print(f"reconstruct_race: simulating {n} frames failed: {why}", file=sys.stderr)
                return 2
        print(f"{'backend':<12} {'frames':>6} {'wall s':>7} {'CPU s':>7}  backend line")
        for n, scan in scans.items():
            for _ in range(a.rounds):
                for b in a.backends:
                    out = Path(tmp, "r.h5")
                    out.unlink(missing_ok=True)
                    c0 = child_cpu_s()
                    t = time.perf_counter()
                    p = subprocess.run(["ptyfast", "reconstruct", str(scan), "-o", str(out), "--backend", b],
                                       capture_output=True, text=True, env=env)
                    wall = time.perf_counter() - t
                    c1 = child_cpu_s()
                    line = next((s for s in p.stdout.splitlines() if s.startswith("backend:")),
                                (p.stderr.strip().splitlines() or [""])[-1])
                    got = re.search(r": ([\d,]+) frames →", p.stdout)
                    frames = got.group(1).replace(",", "") if got else "?"
                    print(f"{b:<12} {frames:>6} {wall:7.2f} {c1 - c0:7.2f}  rc={p.returncode} {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
