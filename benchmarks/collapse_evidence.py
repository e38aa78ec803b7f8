"""Why networks collapsed, and what fixed it: overfit one fixed batch with each recipe, side by side.

    python benchmarks/collapse_evidence.py --steps 300 -o benchmarks/results/collapse-evidence.json

For each row, a fixed batch of 32 patterns of the bundled confined default probe (128², held-out-free
procedural objects), the network trained ``--steps`` Adam steps on that batch only; reported on the same
batch: ``relative`` (loss / loss of the best constant) and ``struct`` (in-probe error with each patch's mean
removed, over the in-probe target variance; 1 = input-independent output), per channel, from
:func:`ptyfast.training.loss.learning_figures` under the ``lit`` definition for every row, so rows compare.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from ptyfast.io.atomic import write_json
from ptyfast.models import build_model
from ptyfast.physics.probe import default_probe
from ptyfast.training.data import DataOptions, PatternSampler, build_pool
from ptyfast.training.loss import learning_figures
from ptyfast.training.train import TrainOptions, _forward, _loss, init_weights, object_statistics, prepare_heads

ROWS = (
    ("paper: ptynet-s-paper, full-window MSE, input / max", "ptynet-s-paper", "mse", "max", 3e-4),
    ("ptynet-s (BN, linear heads), full-window MSE, input / max", "ptynet-s", "mse", "max", 1e-3),
    ("ptynet-s, lit loss, input / max", "ptynet-s", "lit", "max", 1e-3),
    ("ptynet-s, lit loss, input / probe intensity (default)", "ptynet-s", "lit", "photons", 1e-3),
)


def run(label, arch, loss, normalise, lr, steps, batch_size, seed) -> dict:
    torch.manual_seed(seed)
    data = DataOptions(object_size=192, pool_size=8, procedural_fraction=1.0, normalise=normalise)
    o = TrainOptions(model=arch, loss=loss, lr=lr, data=data)
    pool = build_pool([], data, np.random.default_rng(seed))
    batch = PatternSampler(pool, default_probe(), data, seed).sample(batch_size)
    model = build_model(arch)
    init_weights(model)
    mean, std = object_statistics(pool)
    prepare_heads(model, mean, std, o)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    dev = torch.device("cpu")
    t = time.perf_counter()
    for _ in range(steps):
        loss_v = _loss(model, batch, o, dev, std)
        opt.zero_grad()
        loss_v.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = _forward(model, batch[0], o, dev)
    target = (torch.from_numpy(batch[1]), torch.from_numpy(batch[2]))
    f = learning_figures(pred, target, torch.from_numpy(batch[3]), std, "lit")
    out = {"label": label, "architecture": arch, "loss": loss, "normalise": normalise, "lr": lr, "steps": steps,
           "seconds": round(time.perf_counter() - t, 1), **{k: round(v, 4) for k, v in f.items()}}
    print(f"{label:60s} relative {f['relative']:.3f}  struct amplitude {f['struct_amplitude']:.3f}  "
          f"phase {f['struct_phase']:.3f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/collapse-evidence.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [run(*r, args.steps, args.batch, args.seed) for r in ROWS]
    write_json(args.output, {"command": f"python benchmarks/collapse_evidence.py --steps {args.steps}",
                             "probe": "bundled default (confined)", "batch": args.batch, "rows": rows})


if __name__ == "__main__":
    main()
