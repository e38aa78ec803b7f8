"""``ptyfast train``: supervised training on simulated data, or on measured scans labelled by a reference
reconstruction (``--labels``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from ptyfast.cli.app import (INPUT, MODEL, OUTPUT, PERFORMANCE, PROBE, SIMULATION, TRAINING, VALIDATION, Frames,
                             choices, command, console)
from ptyfast.choices import Autocast, Normalisation, Schedule, Simulator, TrainLoss, Transform
from ptyfast.errors import InputError


#: --labels defaults: half of each batch simulated from the reference objects, and the shipped weights as the start
#: (from scratch, measured patterns alone overfit: validation loss rising from step 200, +3.2 dB phase on the star's
#: held-out half; benchmarks/instrument_workflow.sh measures the defaults).
LABELS_MIX = 0.5


def shipped_start(architecture: str) -> str:
    """The shipped checkpoint of ``architecture`` ("" when none is shipped): --labels training starts from it."""
    from ptyfast.models.pretrained import SHIPPED, resolve_model

    if architecture not in SHIPPED:
        return ""
    source = resolve_model(architecture)
    return str(source.checkpoint) if source.checkpoint else ""


# The options of `ptyfast train`, in the order --help lists them within each panel.
SourcesArg = Annotated[Optional[list[Path]], typer.Argument(
    metavar="SOURCE", help="Image files or folders (amplitude/phase sources; none: procedural objects only); with "
                           "--labels, the scans.")]
RunDirOpt = Annotated[Path, typer.Option("-o", "--output", rich_help_panel=OUTPUT,
                                         help="Run directory (last.pt, best.pt).")]
ArchitectureOpt = Annotated[str, typer.Option(
    "--architecture", "--model", metavar="ARCH", rich_help_panel=MODEL,
    help="Architecture to train (`ptyfast models` lists them): ptynet-s, ptynet-s-paper, ptynet-b, ptychonn, "
         "ptychonn-recipe. (--init-from names starting weights.)")]
StepsOpt = Annotated[int, typer.Option(min=1, rich_help_panel=TRAINING, help="Optimiser steps in total.")]
BatchOpt = Annotated[int, typer.Option(min=1, rich_help_panel=TRAINING, help="Patterns per step (per process).")]
LrOpt = Annotated[float, typer.Option(min=0, metavar="RATE", rich_help_panel=TRAINING,
                                      help="Peak learning rate (ptyfast: 1e-3; paper: 1e-4).")]
LrMinOpt = Annotated[float, typer.Option(min=0, metavar="RATE", rich_help_panel=TRAINING,
                                         help="Learning-rate floor.")]
ScheduleOpt = Annotated[str, typer.Option(metavar=choices(Schedule), rich_help_panel=TRAINING,
                                          help="onecycle (warm-up + cosine) or cyclic (paper, triangular2).")]
LossOpt = Annotated[str, typer.Option(metavar=choices(TrainLoss), rich_help_panel=TRAINING,
                                      help="lit (in-probe, free phase offsets) or mse (paper, full window).")]
PhaseMeanWeightOpt = Annotated[float, typer.Option(min=0, metavar="WEIGHT", rich_help_panel=TRAINING,
                                                   help="Weight of each patch's mean phase error (lit).")]
PhaseWeightOpt = Annotated[float, typer.Option(min=0, metavar="WEIGHT", rich_help_panel=TRAINING,
                                               help="Weight of the phase channel against the amplitude's (lit).")]
CycleStepsOpt = Annotated[int, typer.Option(min=1, rich_help_panel=TRAINING,
                                            help="Half-cycle length of the cyclic schedule.")]
EmaOpt = Annotated[float, typer.Option(metavar="DECAY", rich_help_panel=TRAINING,
                                       help="Decay of a moving average of the weights used for validation and best.pt "
                                            "(e.g. 0.999; 0 = off).")]
AmpOpt = Annotated[str, typer.Option(metavar=choices(Autocast), rich_help_panel=PERFORMANCE,
                                     help="Mixed-precision training: bf16 autocast (weights stay fp32) or none. Not "
                                          "the inference --precision of reconstruct and export.")]
SimulateOpt = Annotated[str, typer.Option(metavar=choices(Simulator), rich_help_panel=PERFORMANCE,
                                          help="Where training patterns are simulated (auto: torch on a GPU, numpy "
                                               "on a CPU).")]
ChannelsLastOpt = Annotated[bool, typer.Option(rich_help_panel=PERFORMANCE, help="channels-last memory format.")]
ClipOpt = Annotated[float, typer.Option(min=0, metavar="NORM", rich_help_panel=TRAINING,
                                        help="Gradient-norm clip (0 = off).")]
ValEveryOpt = Annotated[int, typer.Option(min=1, rich_help_panel=VALIDATION, help="Steps between two validations.")]
ValSizeOpt = Annotated[int, typer.Option(min=8, rich_help_panel=VALIDATION, help="Patterns in the validation set.")]
ProbeOpt = Annotated[Optional[Path], typer.Option(rich_help_panel=PROBE,
                                                  help="Probe .npy/CXI (default: the bundled confined probe).")]
ObjectSizeOpt = Annotated[int, typer.Option(min=32, metavar="PX", rich_help_panel=SIMULATION,
                                            help="Pool object size in pixels.")]
PoolSizeOpt = Annotated[int, typer.Option(min=2, rich_help_panel=SIMULATION, help="Objects in the training pool.")]
ProceduralOpt = Annotated[float, typer.Option(min=0, max=1, metavar="FRACTION", rich_help_panel=SIMULATION,
                                              help="Fraction of procedural objects.")]
NoiseFractionOpt = Annotated[float, typer.Option(
    "--noise-fraction", "--noise", min=0, max=1, metavar="FRACTION", rich_help_panel=SIMULATION,
    help="Fraction of samples with Poisson noise.")]
NoisyPhotonsOpt = Annotated[str, typer.Option(
    "--noisy-photons", "--photons", metavar="LO:HI", rich_help_panel=SIMULATION,
    help="Photon range per frame of the noisy samples.")]
TransformOpt = Annotated[str, typer.Option(metavar=choices(Transform), rich_help_panel=MODEL,
                                           help="Network-input transform (paper: sqrt).")]
NormaliseOpt = Annotated[str, typer.Option(metavar=choices(Normalisation), rich_help_panel=MODEL,
                                           help="Input normalisation: by the probe's photons, the pattern's max "
                                                "(paper), its std, or none.")]
CleanPhotonsOpt = Annotated[Optional[str], typer.Option(metavar="LO:HI", rich_help_panel=SIMULATION,
                                                        help="Photon range per frame of the noise-free samples "
                                                             "(default: the probe's power).")]
RandomProbesOpt = Annotated[int, typer.Option(min=0, rich_help_panel=PROBE,
                                              help="Random Fresnel probes mixed in (0 = fixed probe).")]
FamilyProbesOpt = Annotated[int, typer.Option(
    min=0, rich_help_panel=PROBE,
    help="Members of the random probe family (focus, defocus either side, central stops, aberrations, a second "
         "mode) drawn once; each sample takes one. 0 = the --probe only.")]
GivenProbeShareOpt = Annotated[float, typer.Option(
    min=0, max=1, metavar="FRACTION", rich_help_panel=PROBE,
    help="With --family-probes: share of samples under --probe itself.")]
SeedOpt = Annotated[int, typer.Option(rich_help_panel=TRAINING, help="Random seed.")]
ValSeedOpt = Annotated[Optional[int], typer.Option(min=0, rich_help_panel=VALIDATION,
                                                   help="Seed of the validation set (default: --seed); keep it fixed "
                                                        "across continued stages.")]
TorchThreadsOpt = Annotated[Optional[int], typer.Option(min=0, rich_help_panel=PERFORMANCE,
                                                        help="torch CPU threads (0 or omitted: torch's default).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", rich_help_panel=TRAINING, help="Continue from OUTPUT/last.pt.")]
InitFromOpt = Annotated[Optional[Path], typer.Option(
    rich_help_panel=TRAINING,
    help="Start from these weights (same architecture) with a fresh optimiser and schedule (with --labels the "
         "default is the shipped model of that architecture).")]
WarmupOpt = Annotated[float, typer.Option(min=0, max=0.5, metavar="FRACTION", rich_help_panel=TRAINING,
                                          help="Warm-up fraction of the steps (onecycle).")]
LabelsOpt = Annotated[Optional[list[Path]], typer.Option(
    "--labels", rich_help_panel=INPUT,
    help="Reference reconstruction (refine/reconstruct output) of each scan given as argument, in order (repeat "
         "the option): train on the measured patterns with its windows as labels.")]
ValFramesOpt = Annotated[Optional[str], typer.Option(
    "--val-frames", metavar="START:STOP[:STEP]", rich_help_panel=INPUT,
    help="--labels: validation frames (default: the last 10 % of --frames, a separate region of a row-ordered "
         "scan).")]
MixSimulatedOpt = Annotated[Optional[float], typer.Option(
    "--mix-simulated", min=0, max=0.95, metavar="FRACTION", rich_help_panel=INPUT,
    help=f"--labels: fraction of each batch simulated from the reference objects with its refined probe (default "
         f"{LABELS_MIX:g}: measured patterns alone overfit a few hundred frames within 200 steps).")]


@command("train", renamed={"--model": "--architecture", "--noise": "--noise-fraction", "--photons": "--noisy-photons"})
def train_cmd(
    images: SourcesArg = None,
    output: RunDirOpt = Path("runs/train"),
    architecture: ArchitectureOpt = "ptynet-s",
    steps: StepsOpt = 2000,
    batch: BatchOpt = 32,
    lr: LrOpt = 1e-3,
    lr_min: LrMinOpt = 1e-5,
    schedule: ScheduleOpt = "onecycle",
    loss: LossOpt = "lit",
    phase_mean_weight: PhaseMeanWeightOpt = 0.1,
    phase_weight: PhaseWeightOpt = 1.0,
    cycle_steps: CycleStepsOpt = 1000,
    ema: EmaOpt = 0.0,
    amp: AmpOpt = "bf16",
    simulate: SimulateOpt = "auto",
    channels_last: ChannelsLastOpt = True,
    clip: ClipOpt = 1.0,
    val_every: ValEveryOpt = 200,
    val_size: ValSizeOpt = 256,
    probe: ProbeOpt = None,
    object_size: ObjectSizeOpt = 320,
    pool_size: PoolSizeOpt = 160,
    procedural: ProceduralOpt = 0.25,
    noise_fraction: NoiseFractionOpt = 0.0,
    noisy_photons: NoisyPhotonsOpt = "1e5:1e8",
    transform: TransformOpt = "sqrt",
    normalise: NormaliseOpt = "photons",
    clean_photons: CleanPhotonsOpt = None,
    random_probes: RandomProbesOpt = 0,
    family_probes: FamilyProbesOpt = 0,
    given_probe_share: GivenProbeShareOpt = 0.1,
    seed: SeedOpt = 0,
    val_seed: ValSeedOpt = None,
    threads: TorchThreadsOpt = None,
    resume: ResumeOpt = False,
    init_from: InitFromOpt = None,
    warmup: WarmupOpt = 0.02,
    labels: LabelsOpt = None,
    frames: Frames = None,
    val_frames: ValFramesOpt = None,
    mix_simulated: MixSimulatedOpt = None,
) -> None:
    """Train a model on simulated diffraction (objects from images + procedural objects), or on measured
    scans with labels from a reference reconstruction (--labels)."""
    _require_torch()
    from ptyfast.training.data import DataOptions
    from ptyfast.training.train import TrainOptions

    photons, clean = _photon_ranges(noisy_photons, clean_photons)
    opts = TrainOptions(
        model=architecture, steps=steps, batch=batch, lr=lr, lr_min=lr_min, schedule=schedule,
        cycle_steps=cycle_steps,
        amp=amp, channels_last=channels_last, clip=clip, val_every=val_every, val_size=val_size, seed=seed,
        loss=loss, phase_mean_weight=phase_mean_weight, phase_weight=phase_weight, warmup=warmup,
        init_from=str(init_from or ""), val_seed=val_seed, ema=ema, simulate=simulate,
        threads=threads or 0,
        data=DataOptions(object_size=object_size, pool_size=pool_size, procedural_fraction=procedural,
                         noise_fraction=noise_fraction, photons=photons, random_probes=random_probes,
                         family_probes=family_probes, given_probe_share=given_probe_share,
                         sample_like=family_probes > 0, transform=transform, normalise=normalise, clean_photons=clean),
    ).validate()
    labelled = None
    if labels:
        labelled, mix_simulated = _labelled(images, labels, probe, opts, frames=frames, val_frames=val_frames,
                                            mix_simulated=mix_simulated, resume=resume,
                                            preprocessing={"transform": transform, "normalise": normalise})
        images = []
    elif frames or val_frames or mix_simulated is not None:
        raise InputError("--frames, --val-frames and --mix-simulated apply to training with --labels only.")
    p = labelled["probe"] if labelled else _given_probe(probe)
    _prepare_run_dir(output, p)
    result = _run(list(images or []), output, opts, p, resume=resume, labelled=labelled,
                  mix_simulated=mix_simulated or 0.0)
    console.print(f"best validation loss {result['best_val_loss']:.5f} after {result['steps']} steps "
                  f"({result['time_s']:.0f} s); best checkpoint: {result['best']}")


def _require_torch() -> None:
    """Refuse to train (one sentence) where PyTorch is not installed."""
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        raise InputError("training needs PyTorch; install it with: pip install 'ptyfast[train]'.") from None


def _photon_ranges(noisy_photons: str, clean_photons: str | None) -> tuple[tuple[float, float], tuple | None]:
    """--noisy-photons and --clean-photons as (LO, HI) ranges (None: no --clean-photons)."""
    try:
        lo, hi = (float(v) for v in noisy_photons.split(":"))
    except ValueError:
        raise InputError(f"--noisy-photons must be LO:HI, e.g. 1e5:1e8; found '{noisy_photons}'.") from None
    clean = None
    if clean_photons:
        try:
            clean = tuple(float(v) for v in clean_photons.split(":"))
        except ValueError:
            raise InputError(f"--clean-photons must be LO:HI; found '{clean_photons}'.") from None
    return (lo, hi), clean


def _labelled(images, labels: list[Path], probe, opts, *, frames, val_frames, mix_simulated, resume: bool,
              preprocessing: dict) -> tuple[dict, float]:
    """--labels: the measured patterns with the reference's windows as labels, and the simulated share of each
    batch; starts from the shipped weights unless --init-from or --resume says otherwise."""
    from ptyfast.training.labels import build_labelled

    if probe:
        raise InputError("--probe does not apply with --labels: the scan's own probe is used.")
    if opts.simulate == "torch":
        raise InputError("--simulate torch does not apply with --labels: the training patterns are the measured "
                         "ones (and --mix-simulated's are simulated in numpy).")
    labelled = build_labelled(list(images or []), list(labels), frames=frames, val_frames=val_frames,
                              preprocessing=preprocessing)
    labelled["sources"] = [f"{s.name}:{r.name}" for s, r in zip(images or [], labels)]
    mix_simulated = LABELS_MIX if mix_simulated is None else mix_simulated
    if not opts.init_from and not resume:
        opts.init_from = shipped_start(opts.model)
        if opts.init_from:
            console.print(f"starting from the shipped {Path(opts.init_from).name} (--init-from to choose)")
    console.print(f"labelled frames: {len(labelled['train'].x)} training, {len(labelled['val'].x)} validation; "
                  + ("half of each batch simulated from the reference objects" if mix_simulated == LABELS_MIX
                     else f"{mix_simulated:.0%} of each batch simulated"))
    return labelled, mix_simulated


def _given_probe(probe: Path | None):
    """The --probe file's probe, or the bundled one."""
    from ptyfast.io.convert import load_probe
    from ptyfast.physics.probe import default_probe

    return load_probe(probe) if probe else default_probe()


def _prepare_run_dir(output: Path, probe) -> None:
    """Create the run directory (only once the inputs are known to be good: a refused run leaves no folder) and
    warn about an undersampled probe."""
    from ptyfast.io.atomic import ensure_dir
    from ptyfast.physics.probe import oversampling_problem

    ensure_dir(output)
    problem = oversampling_problem(probe)
    if problem:
        console.print(f"[yellow]warning:[/] {problem[0].upper() + problem[1:]}")


def _run(images: list[Path], output: Path, opts, probe, *, resume: bool, labelled: dict | None,
         mix_simulated: float) -> dict:
    """Train under a progress bar, with a line per validation; the training result."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from ptyfast.training.train import train

    with Progress(TextColumn("[bold]train {task.fields[model]}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"),
                  TextColumn("loss {task.fields[loss]:.4f} val {task.fields[val]:.4f} rel {task.fields[rel]:.3f} "
                             "struct {task.fields[struct]:.3f} {task.fields[pps]:.0f} pat/s"),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("train", total=opts.steps, model=opts.model, loss=float("nan"), val=float("nan"),
                            rel=float("nan"), struct=float("nan"), pps=0.0)

        def on_step(step: int, info: dict) -> None:
            fields = {"loss": info["loss"]}
            if "val" in info:
                fields.update(val=info["val"], rel=info["relative"], struct=info["struct"])
                bar.console.print(f"step {step}: validation loss {info['val']:.4f}, relative to a constant "
                                  f"{info['relative']:.3f}, structure {info['struct']:.3f} (1 = collapsed)",
                                  highlight=False)
            if "patterns_per_s" in info:
                fields["pps"] = info["patterns_per_s"]
            bar.update(task, completed=step, **fields)

        if labelled:  # reconstruct checks later scans against the probe the model learned (PROBE_FILE) and
            # stitches them with the reference's refined probe (REFINED_PROBE_FILE)
            from ptyfast.io.atomic import atomic_path
            from ptyfast.runtime.reconstruct import PROBE_FILE, REFINED_PROBE_FILE

            for name, array in ((PROBE_FILE, probe), (REFINED_PROBE_FILE, labelled["refined_probe"])):
                with atomic_path(output / name) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, array)
        return train(images, output, opts, probe=probe, resume=resume, progress=on_step,
                     labelled=labelled, mix_simulated=mix_simulated)
