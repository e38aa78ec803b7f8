"""Seconds per rPIE iteration on the Tike Siemens star (516 frames 128², numpy path, this CPU).

Run:  pytest benchmarks/bench_refine.py --benchmark-only        (pytest-benchmark; s/iteration in extra_info)
      python benchmarks/bench_refine.py                          (plain table)
Against Pty-Chi at equal settings, in one run: ``python benchmarks/ptychi_compare.py`` (see its docstring).

Measured (2 shared cores, AVX-512; noisy ±30 % with other jobs running): batch 32 ≈ 0.39–0.49 s/iteration,
sequential ≈ 0.30–0.6 s/iteration; FFTs are ~1/3 of the time, the numpy twin of ``gather`` ~1/4.
Pty-Chi 2.2.0 rPIE (torch 2.13 CPU), batch 32, probe fixed: 6.2 s/iteration (ptychi_compare.py, same run).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _star import STAR, load_star  # noqa: E402

CASES = [(None, False), (None, True), (32, False), (32, True)]  # (batch, probe update)


def seconds_per_iteration(scan, batch, probe_update, iterations=4) -> float:
    from ptyfast.refine import refine

    r = refine(scan, init="flat", algorithm="rpie", iterations=iterations + 1, batch=batch,
               update_probe=probe_update, probe_start=0)
    return float(np.median(r.timings[1:]))  # first iteration = warm-up (FFT plans, caches)


@pytest.fixture(scope="module")
def star():
    if not STAR.exists():
        pytest.skip(f"{STAR} not present")
    return load_star()


@pytest.mark.parametrize("batch, probe_update", CASES)
def test_rpie_iteration(benchmark, star, batch, probe_update):
    from ptyfast.refine import refine

    benchmark.extra_info.update(batch=batch or 1, probe_update=probe_update, frames=star.n_frames)
    r = benchmark.pedantic(lambda: refine(star, init="flat", iterations=2, batch=batch,
                                          update_probe=probe_update, probe_start=0), rounds=1, iterations=1)
    benchmark.extra_info["s_per_iteration"] = float(np.median(r.timings))


if __name__ == "__main__":
    scan = load_star()
    print(f"rPIE on the Siemens star ({scan.n_frames} frames {scan.frame_shape}), numpy path")
    for batch, pu in CASES:
        s = seconds_per_iteration(scan, batch, pu)
        print(f"  batch {batch or 1:>3}  probe update {'on ' if pu else 'off'}  {s:.3f} s/iteration  "
              f"({1e6 * s / scan.n_frames:.0f} µs/position)")
