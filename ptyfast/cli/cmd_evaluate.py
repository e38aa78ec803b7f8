"""``ptyfast evaluate``: quality of a reconstruction against the ground truth held in a simulated scan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from ptyfast.cli.app import command, console


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
    reconstruction: Annotated[Optional[Path], typer.Argument(help="A reconstruct/refine output .h5.")] = None,
    truth: Annotated[Optional[Path], typer.Option(help="The simulated scan holding the ground truth.")] = None,
    reference: Annotated[Optional[Path], typer.Option(
        help="Instead of --truth: another reconstruction of the same scan (e.g. rPIE of all frames) to compare "
             "with, on the pixels both cover well (real data have no ground truth).")] = None,
    coverage: Annotated[float, typer.Option(min=0, max=1, help="Compare where weight ≥ this × max.")] = 0.1,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures as JSON.")] = None,
    protocol: Annotated[Optional[str], typer.Option(help="'paper': reproduce the seed paper's tables.")] = None,
    images: Annotated[Optional[Path], typer.Option(help="Folder of the paper's cat-face images (--protocol paper).")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Report folder (--protocol paper).")] = Path("paper-report"),
    budget_minutes: Annotated[float, typer.Option(help="--protocol paper: training budget per trained model "
                                                       "(minutes of this machine).")] = 5.0,
    models: Annotated[str, typer.Option(help="--protocol paper: comma-separated models to evaluate.")]
    = "ptynet-s,ptychonn,ptychonet,ptynet-b",
    model: Annotated[Optional[str], typer.Option(help="--protocol paper: PtyNet-S weights (default: shipped).")] = None,
    test_objects: Annotated[int, typer.Option(help="--protocol paper: held-out test objects.")] = 5,
    object_size: Annotated[int, typer.Option(help="--protocol paper: test object side in px (paper 608–640).")] = 608,
    overlaps: Annotated[str, typer.Option(help="--protocol paper: Table 2 overlaps.")] = "0.75,0.5,0.25,0",
    refine_overlaps: Annotated[str, typer.Option(help="--protocol paper: Figure 9 overlaps.")] = "0.75,0.5,0.25",
    train_steps: Annotated[Optional[int], typer.Option(help="--protocol paper: fixed training steps instead of "
                                                            "the budget.")] = None,
    finetune_epochs: Annotated[int, typer.Option(help="--protocol paper: Table 3 fine-tuning epochs.")] = 30,
    refine_iterations: Annotated[int, typer.Option(help="--protocol paper: Figure 9 rPIE iterations.")] = 50,
    experiments: Annotated[str, typer.Option(help="--protocol paper: any of table1,table2,table3,figure9.")]
    = "table1,table2,table3,figure9",
) -> None:
    """MSE / PSNR / SSIM / FRC of a reconstruction against ground truth, beside flat and blurred baselines."""
    from ptyfast.errors import InputError

    if protocol is not None:
        if protocol != "paper":
            raise InputError(f"unknown protocol '{protocol}'; the only protocol is 'paper'.")
        from ptyfast.cli.app import parse_list
        from ptyfast.evaluation.paper import PaperConfig, run_paper_protocol

        config = PaperConfig(
            models=parse_list(models, what="model"), model_s=model, budget_minutes=budget_minutes,
            train_steps=train_steps, test_objects=test_objects, object_size=object_size,
            overlaps=parse_list(overlaps, kind=float, what="overlap"),
            refine_overlaps=parse_list(refine_overlaps, kind=float, what="overlap"),
            finetune_epochs=finetune_epochs, refine_iterations=refine_iterations,
            experiments=parse_list(experiments, what="experiment"))
        run_paper_protocol(images, output, console=console, config=config)
        return
    if reconstruction is None or (truth is None) == (reference is None):
        raise InputError("give a reconstruction file and either --truth SCAN or --reference REC.h5 (or --protocol "
                         "paper --images DIR).")
    from ptyfast.io.atomic import atomic_path
    from ptyfast.io.convert import load_any
    from ptyfast.metrics import evaluate_against_truth

    rec = _aligned(reconstruction)
    if reference is not None:
        ref = _aligned(reference)
        w = ref["weight"]
        target = np.where(w >= coverage * float(w.max()), ref["object"], 0).astype(np.complex64)
        origin, name = np.asarray(rec["origin"]) - np.asarray(ref["origin"]), reference.name
    else:
        scan = load_any(truth)
        if scan.truth is None:
            raise InputError(f"{truth} holds no ground-truth object; evaluate needs a simulated scan.")
        target, origin, name = scan.truth, rec["origin"], "truth"
    q, base, region = evaluate_against_truth(rec["object"], rec["weight"], origin, target, coverage=coverage)
    console.print(quality_table({"reconstruction": q, **base},
                                f"{reconstruction.name} vs {name} ({int(region.sum())} px, weight ≥ {coverage:g}·max)"))
    if json_out is not None:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps({"reconstruction": q.as_dict(),
                                       **{k: v.as_dict() for k, v in base.items()}}, indent=2))
