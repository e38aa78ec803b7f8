"""Training curve of one model from the ``log.jsonl`` of its run(s), as PNG + JSON.

    python benchmarks/training_curve.py RUN_STAGE1 RUN_STAGE2 ... -o ptyfast/data/ptynet-s-training
    python benchmarks/training_curve.py --previous ptyfast/data/ptynet-s-training.json RUN_STAGE4 -o /tmp/curve

Stages are runs continued with ``ptyfast train --init-from``: their patterns and times are added up in the
order given; ``--previous`` starts from the stages of an earlier curve (its JSON), for runs no longer on disk.
A continued stage's step 0 (the previous stage's weights) is kept only when its validation set differs
(another ``--val-seed``): the figures then jump at the stage line without any training, and the plot shows it.
Plotted per validation: ``relative`` (loss / loss of the best constant prediction) and the
structure figures of amplitude and phase (1 = an input-independent, collapsed network; see
:mod:`ptyfast.training.loss`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_stages(runs: list[Path], previous: list[dict] | None = None) -> list[dict]:
    rows = list(previous or [])
    patterns0 = rows[-1]["patterns"] if rows else 0
    time0 = rows[-1]["time_s"] if rows else 0.0
    first = rows[-1]["stage"] + 1 if rows else 0
    for stage, run in enumerate(runs, start=first):
        entries = [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines() if line.strip()]
        for e in entries:
            if stage and e["step"] == 0 and _same_validation(rows[-1], e):
                continue  # the continued run's step 0 repeats the previous stage's end
            rows.append({"stage": stage, "run": Path(run).name, "step": e["step"], "patterns": patterns0 + e["patterns"],
                         "time_s": round(time0 + e["time_s"], 1), "relative": e["relative"],
                         "struct_amplitude": e["struct_amplitude"], "struct_phase": e["struct_phase"],
                         "val_loss": e["val_loss"]})
        patterns0 = rows[-1]["patterns"]
        time0 = rows[-1]["time_s"]
    return rows


def _same_validation(last: dict, step0: dict) -> bool:
    """Whether a continued stage's step 0 scores the previous stage's end as that stage did (same validation set)."""
    return abs(last["val_loss"] - step0["val_loss"]) <= 1e-3 * abs(last["val_loss"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--previous", type=Path, default=None, help="Curve JSON of the earlier stages.")
    ap.add_argument("-o", "--output", type=Path, required=True, help="Output stem: STEM.png and STEM.json.")
    args = ap.parse_args()
    if args.previous is not None and args.previous.resolve() == args.output.with_suffix(".json").resolve():
        import sys

        print(f"--previous {args.previous} is also the output: write the new curve to another stem and move it "
              "into place once checked.", file=sys.stderr)
        raise SystemExit(2)
    previous = json.loads(args.previous.read_text()) if args.previous else {"runs": [], "validations": []}
    rows = read_stages(args.runs, previous["validations"])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ptyfast.io.atomic import write_json
    from ptyfast.runtime.output import _savefig

    x = [r["patterns"] / 1e3 for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for key, label in (("relative", "loss / best-constant loss"), ("struct_amplitude", "structure, amplitude"),
                       ("struct_phase", "structure, phase")):
        ax.plot(x, [r[key] for r in rows], marker=".", label=label)
    for stage in range(1, max(r["stage"] for r in rows) + 1):
        first = next(r for r in rows if r["stage"] == stage)
        ax.axvline(first["patterns"] / 1e3, color="grey", lw=0.7, ls=":")
    ax.axhline(1.0, color="black", lw=0.7, ls="--")
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("training patterns seen (thousands)")
    ax.set_ylabel("validation figure (1 = collapsed)")
    ax.set_title(f"{len(rows)} validations, {rows[-1]['time_s'] / 60:.0f} min of training")
    ax.legend()
    ax.grid(alpha=0.3)
    _savefig(fig, args.output.with_suffix(".png"))
    plt.close(fig)
    write_json(args.output.with_suffix(".json"), {"runs": previous["runs"] + [str(r) for r in args.runs],
                                                         "validations": rows})
    last = rows[-1]
    print(f"{last['patterns']:,} patterns, {last['time_s'] / 60:.0f} min: relative {last['relative']:.3f}, "
          f"structure amplitude {last['struct_amplitude']:.3f}, phase {last['struct_phase']:.3f}")


if __name__ == "__main__":
    main()
