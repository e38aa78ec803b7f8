"""The protocol's PNG figures (matplotlib, Agg): reconstructions, FRC, Table 3 panels, rPIE convergence."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptyfast.evaluation.paper.protocol import LABELS, PaperConfig

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _savefig(fig, path: Path) -> Path:
    from ptyfast.io.atomic import save_figure

    save_figure(fig, path, bbox_inches="tight", dpi=90)
    _plt().close(fig)
    return path


def figure_reconstructions(out: Path, keep: dict, cfg: PaperConfig) -> list[Path]:
    from ptyfast.metrics import aligned_phase, bounding_box

    plt = _plt()
    ovs = sorted(keep["truth"], reverse=True)
    names = list(keep["recon"])
    fig, axes = plt.subplots(len(names) + 1, len(ovs), figsize=(3.2 * len(ovs), 3.2 * (len(names) + 1)), squeeze=False)
    for c, o in enumerate(ovs):
        box = bounding_box(keep["region"][o])
        t = keep["truth"][o][box]
        lo, hi = np.percentile(np.angle(t), [0.5, 99.5])
        rows = [("truth", np.angle(t))] + [(LABELS[n], aligned_phase(keep["recon"][n][o][box], t,
                                                                      keep["region"][o][box])) for n in names]
        for r, (label, img) in enumerate(rows):
            ax = axes[r, c]
            ax.imshow(img, cmap="twilight", vmin=lo, vmax=hi)
            ax.set_title(f"{label}, {o:.0%} overlap", fontsize=9)
            ax.axis("off")
    fig.suptitle("phase (rad) of the first held-out object, stitched interior")
    return [_savefig(fig, out / "figures" / "reconstructions.png")]


def figure_frc(out: Path, keep: dict) -> list[Path]:
    plt = _plt()
    ovs = sorted(keep["truth"], reverse=True)
    fig, axes = plt.subplots(1, len(ovs), figsize=(4.2 * len(ovs), 3.4), squeeze=False)
    for c, o in enumerate(ovs):
        ax = axes[0, c]
        for name, curves in keep["frc"].items():
            f, v = curves[o]
            ax.plot(f, v, label=LABELS.get(name, name), ls="--" if name.startswith("blurred") else "-")
        ax.axhline(1 / 7, color="gray", lw=0.8, ls=":")
        ax.set(xlabel="spatial frequency (cycles/px)", ylabel="FRC", title=f"{o:.0%} overlap", ylim=(-0.1, 1.05))
        ax.legend(fontsize=7)
    return [_savefig(fig, out / "figures" / "frc.png")]


def figure_table3(out: Path, panels: dict, cfg: PaperConfig) -> list[Path]:
    from ptyfast.metrics import aligned_phase, bounding_box

    plt = _plt()
    order = ["clear", "finetune_clear", "noise", "finetune_noise"]
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.6))
    o0, tg, region, _ = panels["clear"]
    box = bounding_box(region)
    t = tg[box]
    lo, hi = np.percentile(np.angle(t), [0.5, 99.5])
    axes[0].imshow(np.angle(t), cmap="twilight", vmin=lo, vmax=hi)
    axes[0].set_title("truth (phase)")
    for ax, key in zip(axes[1:], order):
        o, tgk, reg, _ = panels[key]
        bx = bounding_box(reg)
        ax.imshow(aligned_phase(o[bx], tgk[bx], reg[bx]), cmap="twilight", vmin=lo, vmax=hi)
        ax.set_title(key.replace("_", " "))
    for ax in axes:
        ax.axis("off")
    p1 = _savefig(fig, out / "figures" / "finetune.png")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for key in order:
        f, v = panels[key][3]
        ax.plot(f, v, label=key.replace("_", " "))
    ax.axhline(1 / 7, color="gray", lw=0.8, ls=":")
    ax.set(xlabel="spatial frequency (cycles/px)", ylabel="FRC", title="FRC before / after fine-tuning")
    ax.legend(fontsize=8)
    return [p1, _savefig(fig, out / "figures" / "finetune_frc.png")]


def figure_convergence(out: Path, f9: dict) -> list[Path]:
    from ptyfast.runtime.output import error_curves_figure

    panels = {f"{float(o):.0%} overlap": {"random start": d["reference_errors"], "PtyNet start": d["errors"]}
              for o, d in f9["overlaps"].items()}
    lines = {f"{float(o):.0%} overlap": d["target_error"] for o, d in f9["overlaps"].items()}
    return [error_curves_figure(out / "figures" / "convergence.png", panels, xlabel="rPIE iteration",
                                ylabel="error", lines=lines, width=4.4, dpi=90)]


# -- report ---------------------------------------------------------------------------------------------------
