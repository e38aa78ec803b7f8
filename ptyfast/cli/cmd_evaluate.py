"""``ptyfast evaluate``: quality of a reconstruction against the ground truth held in a simulated scan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from ptyfast.cli.app import INPUT, OUTPUT, command, console


def quality_table(rows: dict, title: str):
    from rich.table import Table

    table = Table(title=title)
    for col in ("", "phase PSNR (dB)", "phase SSIM", "phase MSE", "amp PSNR (dB)", "amp SSIM", "FRC res. (cyc/px)"):
        table.add_column(col, justify="right" if col else "left")
    for name, q in rows.items():
        table.add_row(name, f"{q.phase_psnr:.2f}", f"{q.phase_ssim:.3f}", f"{q.phase_mse:.4g}",
                      f"{q.amplitude_psnr:.2f}", f"{q.amplitude_ssim:.3f}", f"{q.frc_resolution:.3f}")
    return table


def _aligned(path: Path) -> dict:
    """A reconstruct/refine output with the datasets evaluate needs to place it in scan coordinates."""
    from ptyfast.errors import InputError
    from ptyfast.runtime.output import read_reconstruction

    rec = read_reconstruction(path)
    missing = [k for k in ("weight", "origin") if k not in rec]
    if missing:
        raise InputError(f"{path} has no {' or '.join(missing)} dataset (written by an older ptyfast); "
                         "rerun reconstruct or refine to get a file evaluate can align.")
    return rec


@command("evaluate")
def evaluate_cmd(
    reconstruction: Annotated[Optional[Path], typer.Argument(metavar="RECONSTRUCTION",
                                                             help="A reconstruct/refine output .h5.")] = None,
    truth: Annotated[Optional[Path], typer.Option(rich_help_panel=INPUT,
                                                  help="The simulated scan holding the ground truth.")] = None,
    reference: Annotated[Optional[Path], typer.Option(
        rich_help_panel=INPUT,
        help="Instead of --truth: another reconstruction of the same scan (e.g. rPIE of all frames) to compare "
             "with, on the pixels both cover well (real data have no ground truth).")] = None,
    coverage: Annotated[float, typer.Option(min=0, max=1, metavar="FRACTION", rich_help_panel=INPUT,
                                            help="Compare where weight ≥ this × max.")] = 0.1,
    json_out: Annotated[Optional[Path], typer.Option("--json", rich_help_panel=OUTPUT,
                                                     help="Also write the figures as JSON.")] = None,
    protocol: Annotated[Optional[str], typer.Option(hidden=True)] = None,  # moved: ptyfast paper
    images: Annotated[Optional[Path], typer.Option(hidden=True)] = None,
) -> None:
    """MSE / PSNR / SSIM / FRC of a reconstruction against ground truth, beside flat and blurred baselines."""
    from ptyfast.errors import InputError

    if protocol is not None or images is not None:  # the paper protocol was part of evaluate before it became its own command
        raise InputError("the paper protocol is its own command now: ptyfast paper --images DIR -o OUT.")
    if reconstruction is None or (truth is None) == (reference is None):
        raise InputError("give a reconstruction file and either --truth SCAN or --reference REC.h5.")
    from ptyfast.io.atomic import atomic_path
    from ptyfast.io.convert import load_any
    from ptyfast.metrics import evaluate_against_reference, evaluate_against_truth

    rec = _aligned(reconstruction)
    if reference is not None:
        ref = _aligned(reference)
        name = reference.name
        q, base, region = evaluate_against_reference(
            rec["object"], rec["weight"], np.asarray(rec["origin"]) - np.asarray(ref["origin"]), ref["object"],
            ref["weight"], coverage=coverage)
    else:
        scan = load_any(truth)
        if scan.truth is None:
            raise InputError(f"{truth} holds no ground-truth object; evaluate needs a simulated scan.")
        name = "truth"
        q, base, region = evaluate_against_truth(rec["object"], rec["weight"], rec["origin"], scan.truth,
                                                 coverage=coverage)
    console.print(quality_table({"reconstruction": q, **base},
                                f"{reconstruction.name} vs {name} ({int(region.sum())} px, weight ≥ {coverage:g}·max)"))
    if json_out is not None:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps({"reconstruction": q.as_dict(),
                                       **{k: v.as_dict() for k, v in base.items()}}, indent=2))
