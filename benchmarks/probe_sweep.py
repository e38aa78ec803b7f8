"""Reconstruction quality across probes the models never saw: held-out probes × held-out images.

    python benchmarks/probe_sweep.py -o benchmarks/results/probe-sweep                       # shipped model(s)
    python benchmarks/probe_sweep.py --model runs/probe/best.pt --model ptyfast/data/ptynet-s-single.pt

Probes: the bundled default; ``--per-kind`` held-out members of each kind the any-instrument issue names
(:func:`ptyfast.physics.probe_family.held_out_probe`: the focus on the other side, a zone plate with a
central stop, astigmatism + coma; drawn from seeds training never uses); ``--measured NAME=FILE`` probes (e.g.
the Siemens star's probe as ``ptyfast refine`` found it); and with ``--sweep`` one parameter at a time
(beam radius on both sides of focus, spot size, central stop, astigmatism). Scans: the release check's
(:mod:`ptyfast.evaluation.release`): held-out cat-face pairs, 75 % raster, ±1 px jitter, Poisson noise, the
probe known; scored on covered pixels against a flat guess. A single-probe model is run on every probe as
``--allow-probe-mismatch`` would. Writes ``probe_sweep.json`` and ``probe_sweep.png`` (dB over flat per probe,
one bar per model, the issue's +6 dB phase / +3 dB amplitude lines).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ptyfast.evaluation.release import ReleaseOptions, release_check
from ptyfast.io.atomic import write_json
from ptyfast.io.convert import load_probe
from ptyfast.physics.probe import default_probe, normalise_probe
from ptyfast.physics.probe_family import HELD_OUT_KINDS, ProbeDraw, family_probe, held_out_probe
from ptyfast.runtime.backends import open_backend

from release_check import held_out_pairs


def probes(per_kind: int, measured: list[str], sweep: bool, photons: float) -> dict[str, np.ndarray]:
    out = {"bundled default": default_probe()}
    for kind in HELD_OUT_KINDS:
        for i in range(per_kind):
            out[f"{kind} {i}"] = held_out_probe(kind, i, photons=photons)
    for spec in measured:
        name, _, path = spec.partition("=")
        out[name] = normalise_probe(load_probe(path), photons)
    if sweep:
        base = dict(radius=20.0, spot=2.0, side=1)
        for r in (12.0, 18.0, 24.0, 30.0):
            for side in (-1, 1):
                out[f"radius {r:.0f} px, {'up' if side < 0 else 'down'}stream"] = family_probe(
                    (128, 128), ProbeDraw(**{**base, "radius": r, "side": side}), photons)[0]
        for spot in (1.3, 3.0, 4.5):
            out[f"spot {spot:g} px"] = family_probe((128, 128), ProbeDraw(**{**base, "spot": spot}), photons)[0]
        for stop in (0.3, 0.5):
            out[f"stop {stop:g}"] = family_probe((128, 128), ProbeDraw(**{**base, "stop": stop}), photons)[0]
        for astig in (0.5, 1.0):
            out[f"astigmatism {astig:g} waves"] = family_probe(
                (128, 128), ProbeDraw(**{**base, "astigmatism": astig, "astigmatism_angle": 0.4}), photons)[0]
    return out


def figure(path: Path, table: dict, models: list[str]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ptyfast.runtime.output import _savefig

    names = list(next(iter(table.values())))
    fig = Figure(figsize=(max(8.0, 0.55 * len(names) + 2), 6.5))
    FigureCanvasAgg(fig)
    width = 0.8 / len(models)
    x = np.arange(len(names))
    for row, (key, goal, label) in enumerate((("phase", 6.0, "phase PSNR − flat (dB)"),
                                             ("amplitude", 3.0, "amplitude PSNR − flat (dB)"))):
        ax = fig.add_subplot(2, 1, row + 1)
        for k, m in enumerate(models):
            ax.bar(x + (k - (len(models) - 1) / 2) * width, [table[m][n][key] for n in names], width, label=m)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.axhline(goal, color="k", ls=":", lw=1.0)
        ax.set_ylabel(label)
        ax.set_xticks(x)
        ax.set_xticklabels(names if row else [], rotation=60, ha="right", fontsize=8)
        if row == 0:
            ax.legend(fontsize=8)
            ax.set_title("held-out probes × held-out images, 75 % raster, probe known (dotted: the issue's line)")
    fig.tight_layout()
    _savefig(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/probe-sweep"))
    ap.add_argument("--model", action="append", default=None, help="model file or name (repeat); default: shipped")
    ap.add_argument("--label", action="append", default=None, help="a label per --model")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--per-kind", type=int, default=3)
    ap.add_argument("--measured", action="append", default=[], help="NAME=FILE: a measured probe (.npy or output)")
    ap.add_argument("--sweep", action="store_true", help="also one parameter at a time")
    ap.add_argument("--size", type=int, default=ReleaseOptions.size)
    ap.add_argument("--photons", type=float, default=ReleaseOptions.photons)
    ap.add_argument("--rpie", action="store_true", help="also Figure 9: network + 20 rPIE vs flat + 100, probe known")
    args = ap.parse_args()
    models = args.model or [None]
    labels = args.label or [str(m or "shipped") for m in models]
    opts = ReleaseOptions(size=args.size, photons=args.photons, rpie=args.rpie)
    pairs = held_out_pairs(args.pairs)
    cases = probes(args.per_kind, args.measured, args.sweep, args.photons)
    table: dict = {}
    raw: dict = {}
    for model, label in zip(models, labels):
        be, reason = open_backend(model, "auto", "cpu")
        table[label], raw[label] = {}, {}
        try:
            for name, probe in cases.items():
                t = time.perf_counter()
                res = release_check(model, pairs, opts, probe=probe, opened=(be, reason))
                s = res["summary"]
                row = {"phase": s["phase_psnr_gain_over_flat_db"], "amplitude": s["amplitude_psnr_gain_over_flat_db"]}
                if args.rpie:
                    row["figure9"] = s["rpie_network_iterations_to_flat_100_object_error"]
                    row["network_20_rpie_phase_psnr"] = res["mean"]["network + 20 rPIE"]["phase_psnr"]
                    row["flat_100_rpie_phase_psnr"] = res["mean"]["flat + 100 rPIE"]["phase_psnr"]
                table[label][name] = row
                raw[label][name] = res["mean"]
                print(f"{label:24s} {name:32s} phase {row['phase']:+6.2f} dB  amplitude {row['amplitude']:+6.2f} dB"
                      + (f"  20 rPIE {row['network_20_rpie_phase_psnr']:.2f} vs flat 100 "
                         f"{row['flat_100_rpie_phase_psnr']:.2f} dB" if args.rpie else "")
                      + f"  ({time.perf_counter() - t:.0f} s)", flush=True)
        finally:
            be.close()
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(args.output / "probe_sweep.json", {"options": opts.__dict__, "pairs": len(pairs), "models": labels,
                                                  "gain_over_flat_db": table, "mean": raw})
    figure(args.output / "probe_sweep.png", table, labels)
    for label in labels:
        held = [v for k, v in table[label].items() if k != "bundled default"]
        print(f"{label}: worst held-out probe phase {min(v['phase'] for v in held):+.2f} dB, amplitude "
              f"{min(v['amplitude'] for v in held):+.2f} dB")


if __name__ == "__main__":
    main()
