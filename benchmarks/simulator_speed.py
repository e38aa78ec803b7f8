"""Training-data simulation: the numpy sampler vs the torch sampler, side by side in one process.

    python benchmarks/simulator_speed.py [--batch 32] [--rounds 20] [--threads 2] [--pool-size 64]
                                         [--json benchmarks/results/simulator_speed.json]

Each round draws one batch with each sampler (alternating, the same options: the default probe, half the
samples with Poisson noise, the train command's data options) and times it; the figure is the median batch
time and patterns/s. CPU torch is always measured; a CUDA device too when there is one (synchronised). This is
what ``ptyfast train --simulate auto`` chooses by: torch on a GPU, numpy on a CPU unless torch wins here.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pool-size", type=int, default=64)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)

    import torch

    from ptyfast import threads
    from ptyfast.physics.probe import default_probe
    from ptyfast.training.data import DataOptions, PatternSampler, build_pool
    from ptyfast.training.torch_data import TorchPatternSampler

    threads.set_threads(a.threads)
    torch.set_num_threads(a.threads)
    opts = DataOptions(pool_size=a.pool_size, noise_fraction=0.5).validate()
    pool = build_pool([], opts, np.random.default_rng(0))
    probe = default_probe()
    samplers = {"numpy": PatternSampler(pool, probe, opts, 1),
                "torch-cpu": TorchPatternSampler(pool, probe, opts, 1, "cpu")}
    if torch.cuda.is_available():
        samplers["torch-cuda"] = TorchPatternSampler(pool, probe, opts, 1, "cuda")
    times: dict[str, list[float]] = {k: [] for k in samplers}
    for r in range(a.rounds + 1):
        for name, s in samplers.items():
            t = time.perf_counter()
            out = s.sample(a.batch)
            if name == "torch-cuda":
                torch.cuda.synchronize()
            if r:  # round 0 warms up (allocations, FFT plans)
                times[name].append(time.perf_counter() - t)
            del out
    rows = {k: {"median_batch_s": statistics.median(v), "patterns_per_s": a.batch / statistics.median(v)}
            for k, v in times.items()}
    for k, v in rows.items():
        print(f"{k:11s} {v['median_batch_s'] * 1e3:7.1f} ms per batch of {a.batch}  {v['patterns_per_s']:7.0f} patterns/s")
    print(f"torch-cpu / numpy time: {rows['torch-cpu']['median_batch_s'] / rows['numpy']['median_batch_s']:.2f}")
    if a.json:
        from ptyfast.io.atomic import write_json

        write_json(a.json, {"batch": a.batch, "rounds": a.rounds, "threads": a.threads,
                            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                            "rows": rows})


if __name__ == "__main__":
    main()
