"""``ptyfast finetune``: adapt a pre-trained network to one scan through the forward model (no ground truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ptyfast.cli.app import (MODEL, OUTPUT, PERFORMANCE, PROBE, TRAINING, VALIDATION, AutoMask, Frames, choices,
                             command, console)
from ptyfast.choices import Autocast, FinetuneLoss, Fit, Freeze, Objective, Scale, Subset
from ptyfast.errors import InputError

# The options of `ptyfast finetune`, in the order --help lists them within each panel.
ScanArg = Annotated[Path, typer.Argument(metavar="SCAN",
                                         help="Scan file: CXI, Tike .npz(.bz2), PtyNet .npz or folder.")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", metavar="MODEL", rich_help_panel=MODEL,
                                                 help="Shipped model name or .pt checkpoint (default: ptynet-s).")]
ProbeOpt = Annotated[Optional[str], typer.Option("--probe", metavar="PATH", rich_help_panel=PROBE,
                                                 help="Probe .npy/CXI file, or 'fresnel' for a simulated guess "
                                                      "(default: the scan's probe).")]
EpochsOpt = Annotated[int, typer.Option("--epochs", min=1, rich_help_panel=TRAINING,
                                        help="Passes over the frames (paper: 300; 400–500 for experimental data).")]
SubsetOpt = Annotated[str, typer.Option("--subset", metavar=choices(Subset, other="FRACTION"), rich_help_panel=TRAINING,
                                        help="Frames to tune on: all, half (every other frame) or a fraction in "
                                             "(0, 1].")]
FreezeOpt = Annotated[str, typer.Option("--freeze", metavar=choices(Freeze), rich_help_panel=TRAINING,
                                        help="none (all weights, paper) or encoder.")]
LossOpt = Annotated[str, typer.Option("--loss", metavar=choices(FinetuneLoss), rich_help_panel=TRAINING,
                                      help="l1 on amplitudes (paper) or poisson NLL.")]
ObjectiveOpt = Annotated[str, typer.Option("--objective", metavar=choices(Objective), rich_help_panel=TRAINING,
                                           help="pattern (paper: each pattern vs its own patch), overlap (vs the "
                                                "stitched object) or guided (paper's loss + pull towards an "
                                                "rPIE-refined object).")]
GuideWeightOpt = Annotated[float, typer.Option("--guide-weight", min=0, metavar="WEIGHT", rich_help_panel=TRAINING,
                                               help="Weight of the rPIE guide (--objective guided).")]
ProbeUpdateOpt = Annotated[bool, typer.Option("--probe-update/--no-probe-update", "--learn-probe",
                                              rich_help_panel=PROBE,
                                              help="Optimise the probe jointly; writes probe.npy + probe.png beside "
                                                   "the model.")]
BatchOpt = Annotated[int, typer.Option("--batch", min=1, rich_help_panel=TRAINING,
                                       help="Patterns per optimiser step.")]
LrOpt = Annotated[float, typer.Option("--lr", min=0, metavar="RATE", rich_help_panel=TRAINING,
                                      help="Initial learning rate, halved every 20 % of the epochs (paper: "
                                           "1e-4).")]
ProbeStepOpt = Annotated[float, typer.Option("--probe-step", metavar="STEP", rich_help_panel=PROBE,
                                             help="Step of the rPIE-style probe update (0, 1].")]
ProbeIterationsOpt = Annotated[int, typer.Option("--probe-iterations", min=1, rich_help_panel=PROBE,
                                                 help="rPIE passes per epoch on the auxiliary object "
                                                      "(--probe-update).")]
ScaleOpt = Annotated[str, typer.Option("--scale", metavar=choices(Scale), rich_help_panel=TRAINING,
                                       help="fit (learnable per-scan amplitude scale) or fixed (probe in absolute "
                                            "photons).")]
PhaseAnchorOpt = Annotated[float, typer.Option("--phase-anchor", min=0, metavar="WEIGHT", rich_help_panel=TRAINING,
                                               help="Weight keeping each patch's mean phase (unconstrained by the "
                                                    "data) in place.")]
AmpOpt = Annotated[str, typer.Option("--amp", metavar=choices(Autocast), rich_help_panel=PERFORMANCE,
                                     help="Mixed precision: bf16 autocast for the network (FFT stays fp32) or none.")]
TorchThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=0, rich_help_panel=PERFORMANCE,
                                                        help="torch CPU threads (0 or omitted: torch's default).")]
FitOpt = Annotated[str, typer.Option("--fit", metavar=choices(Fit), rich_help_panel=MODEL,
                                     help="Adapt frames of another size to the model input (as reconstruct --fit).")]
SeedOpt = Annotated[int, typer.Option("--seed", rich_help_panel=TRAINING, help="Shuffling seed.")]
ValFractionOpt = Annotated[float, typer.Option(
    "--val-fraction", metavar="FRACTION", rich_help_panel=VALIDATION,
    help="Fraction of the frames held out of training, in [0, 0.5] (at least 3 frames): the weights are judged by "
         "their data error ε against the object reconstruct makes (offsets solved), the best are kept. 0 = no "
         "guard: the last weights are written unchecked.")]
ValEveryOpt = Annotated[int, typer.Option("--val-every", rich_help_panel=VALIDATION,
                                          help="Epochs between two checks of the held-out error (also before the "
                                               "first epoch and after the last).")]
PatienceOpt = Annotated[int, typer.Option("--patience", rich_help_panel=VALIDATION,
                                          help="Stop after this many checks in a row without a lower held-out "
                                               "error.")]
OutFolderOpt = Annotated[Path, typer.Option("-o", "--output", rich_help_panel=OUTPUT,
                                            help="Folder for the fine-tuned model (MODEL-ft.pt + .json).")]


@command("finetune", renamed={"--learn-probe": "--probe-update"})
def finetune_cmd(
    scan: ScanArg,
    model: ModelOpt = None,
    probe: ProbeOpt = None,
    epochs: EpochsOpt = 300,
    subset: SubsetOpt = "all",
    freeze: FreezeOpt = "none",
    loss: LossOpt = "l1",
    objective: ObjectiveOpt = "pattern",
    guide_weight: GuideWeightOpt = 20.0,
    probe_update: ProbeUpdateOpt = False,
    batch: BatchOpt = 16,
    lr: LrOpt = 1e-4,
    probe_step: ProbeStepOpt = 1.0,
    probe_iterations: ProbeIterationsOpt = 5,
    scale: ScaleOpt = "fit",
    phase_anchor: PhaseAnchorOpt = 1.0,
    amp: AmpOpt = "bf16",
    threads: TorchThreadsOpt = None,
    frames: Frames = None,
    auto_mask: AutoMask = True,
    fit: FitOpt = "none",
    seed: SeedOpt = 0,
    val_fraction: ValFractionOpt = 0.1,
    val_every: ValEveryOpt = 5,
    patience: PatienceOpt = 10,
    output: OutFolderOpt = Path("finetuned"),
) -> None:
    """Fine-tune a pre-trained network on SCAN: predicted patches × probe → far field, compared with the
    measured amplitudes (L1, the paper's method). Writes a new model usable by `reconstruct --model`.

    A falling loss does not guarantee a better reconstruction, so by default 10 % of the frames are held out:
    every --val-every epochs the frames are reconstructed as `reconstruct` would (phase offsets solved) and
    the held-out frames' data error ε is measured. The weights with the lowest ε are written — the starting
    weights unless fine-tuning lowered it by 5 % or more, which the report then says — and training stops after
    --patience checks without improvement. ε is a data error: a fine-tuning that fits the data more closely
    than the true object does can lower it and still be kept; compare with `evaluate` where truth is known."""
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        raise InputError("fine-tuning needs PyTorch; install it with: pip install 'ptyfast[train]'.") from None
    from ptyfast.finetune import FinetuneOptions

    opts = FinetuneOptions(epochs=epochs, lr=lr, batch=batch, subset=subset, freeze=freeze, loss=loss,
                           objective=objective, guide_weight=guide_weight, learn_probe=probe_update,
                           probe_step=probe_step, probe_iterations=probe_iterations,
                           scale=scale, phase_anchor=phase_anchor,
                           amp=amp, seed=seed, threads=threads or 0, fit=fit, val_fraction=val_fraction,
                           val_every=val_every, patience=patience).validate()
    result, written = _run(scan, model=model, probe=probe, output=output, opts=opts, frames=frames,
                           auto_mask=auto_mask)
    _report(result, written, epochs)


def _run(scan: Path, *, model, probe, output: Path, opts, frames, auto_mask: bool):
    """Fine-tune under a progress bar that appears once the inputs are known to be good; (result, files written)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ptyfast.finetune import finetune_file

    columns = (TextColumn("[bold]finetune"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}  R {task.fields[r]:.4f}  scale {task.fields[s]:.3g}"
                          "  held-out ε {task.fields[e]:.3g}"),
               TimeRemainingColumn())
    bar = Progress(*columns, console=console)
    task = None

    def on_start(info: dict) -> None:  # inputs are valid: only now show a bar
        nonlocal task
        held = (f"; {info['held_out']} frames held out for validation" if info["held_out"]
                else "; no frames held out (--val-fraction 0): the last weights are written unchecked")
        console.print(f"fine-tuning {info['model']} on {info['frames']} of {info['frames_total']} frames "
                      f"({'the scan probe' if info['probe'] == 'given' else 'probe ' + info['probe']}){held}")
        if info["auto_mask_note"]:
            console.print(f"  pixels: {info['auto_mask_note']}", highlight=False, markup=False)
        bar.start()
        task = bar.add_task("finetune", total=opts.epochs, loss=float("nan"), r=float("nan"), s=float("nan"),
                            e=float("nan"))

    def on_epoch(epoch: int, info: dict) -> None:
        more = {"e": info["held_out_error"]} if "held_out_error" in info else {}
        bar.update(task, completed=epoch, loss=info["loss"], r=info["r_factor"], s=info["scale"], **more)

    try:
        return finetune_file(scan, model=model, probe=probe, output=output, options=opts, frames=frames,
                             progress=on_epoch, on_start=on_start, auto_mask=auto_mask)
    finally:
        bar.stop()


def _report(result, written: dict, epochs: int) -> None:
    """The summary: R-factor before and after, the held-out check, the verdict, the files written."""
    console.print(f"R-factor (training frames) {result.r_factor_before:.4f} → {result.r_factor_after:.4f} "
                  f"(amplitude scale {result.amplitude_scale:.4g}) in {result.time_s:.1f} s, "
                  f"{result.epochs_run} of {epochs} epochs")
    if len(result.held_out):
        listed = ", ".join(str(int(i)) for i in result.held_out[:12]) + (", …" if len(result.held_out) > 12 else "")
        console.print(f"held-out frames ({len(result.held_out)}): {listed}; "
                      f"data error ε {result.held_out_error_before:.3g} at the start, "
                      f"{result.held_out_error_after:.3g} with the weights written")
    console.print(result.verdict[:1].upper() + result.verdict[1:])
    console.print(f"model: {written['checkpoint']}" + (f"; probe: {written['probe']}" if "probe" in written else "")
                  + (f"; preview: {written['preview']}, {written['result']}" if "preview" in written else ""))
