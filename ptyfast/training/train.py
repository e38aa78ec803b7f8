"""Supervised training loop with bf16 autocast, channels-last, a validation split with best-checkpoint
selection, ``--resume``, and DistributedDataParallel under ``torchrun``.

ptyfast's recipe (the default; evidence in ``docs/training.md``): ``ptynet-s`` (BatchNorm, standardised
linear heads, zero-initialised last layer), the ``lit`` loss (in-probe only, the phase's undetermined per-patch
mean down-weighted, see :mod:`ptyfast.training.loss`), inputs normalised by the probe's intensity (not per
pattern), Adam at 1e-3 with warm-up and cosine decay (``onecycle``), gradient clipping.

The paper's recipe (Pan et al. 2023, Methods) stays selectable: ``--model ptynet-s-paper --loss mse
--normalise max --schedule cyclic --lr 1e-4``: Adam, cyclic learning rate (triangular2 between ``lr_min``
and ``lr``), loss = MSE(amplitude) + MSE(phase) over the full window.

Every validation logs the loss, its ratio to the best constant prediction's loss (``relative``) and the
structure figure (``struct``); both are ≈ 1 for a collapsed, input-independent network.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ptyfast import __version__
from ptyfast.allocator import keep_freed_memory
from ptyfast.choices import Autocast, Schedule, Simulator, TrainLoss
from ptyfast.errors import InputError
from ptyfast.io.images import read_image
from ptyfast.models import build_model, count_parameters, get_entry
from ptyfast.models.checkpoint import read_checkpoint, save_checkpoint
from ptyfast.models.manifest import Manifest, probe_hash
from ptyfast.training.data import DataOptions, PatternSampler, build_pool, fixed_set, list_images, lit_mask
from ptyfast.training.loss import learning_figures, loss_function
from ptyfast.training.torch_data import make_sampler


@dataclass
class TrainOptions:
    """Training options (CLI flags map 1:1).

    Attributes
    ----------
    model : registered architecture name.
    steps : optimiser steps in total (a resumed run continues to this number).
    batch : patterns per step per process.
    lr, lr_min : peak and floor learning rate.
    schedule : ``cyclic`` (paper: triangular2, half-cycle ``cycle_steps``) or ``onecycle`` (warm-up + cosine).
    amp : ``bf16`` (autocast; ≈2.5× faster on AVX-512 BF16 CPUs) or ``none``.
    val_every, val_size : validation cadence (steps) and fixed validation-set size.
    val_fraction : share of the images held out for validation (the last ones in sorted order).
    init_bias : start the output heads at the training objects' mean amplitude and phase.
    loss : ``lit`` (ptyfast, in-probe, see :mod:`ptyfast.training.loss`) or ``mse`` (paper, full window).
    phase_mean_weight : weight of each patch's mean phase error in the ``lit`` loss.
    phase_weight : weight of the phase channel against the amplitude's in the ``lit`` loss.
    warmup : fraction of the steps spent warming up (``onecycle``).
    val_seed : seed of the fixed validation set (default ``seed``); keep it fixed across stages continued
        with ``init_from`` so their curves compare.
    init_from : start from the weights of this checkpoint (same architecture) with a fresh optimiser and
        schedule: continue a run under a new schedule, or adapt a model to a new probe.
    ema : decay of an exponential moving average of the weights (and BatchNorm statistics), 0 = off. With it,
        validation and ``best.pt`` use the averaged weights: less step-to-step noise, and less over-fitting on
        small labelled sets.
    simulate : where the training patterns are simulated: ``auto`` (torch on the training device when it is
        a GPU, numpy on a CPU, where it is faster: ``benchmarks/simulator_speed.py``), ``numpy`` or ``torch``.
    """

    model: str = "ptynet-s"
    steps: int = 2000
    batch: int = 32
    lr: float = 1e-3
    lr_min: float = 1e-5
    schedule: str = "onecycle"
    cycle_steps: int = 1000
    amp: str = "bf16"
    channels_last: bool = True
    clip: float = 1.0
    val_every: int = 200
    val_size: int = 256
    val_fraction: float = 0.1
    seed: int = 0
    threads: int = 0
    init_bias: bool = True
    loss: str = "lit"
    phase_mean_weight: float = 0.1
    phase_weight: float = 1.0
    warmup: float = 0.02
    init_from: str = ""
    val_seed: int | None = None
    ema: float = 0.0
    simulate: str = "auto"
    data: DataOptions = field(default_factory=DataOptions)

    def validate(self) -> "TrainOptions":
        """Raise :class:`InputError` (one sentence, named as the CLI option) on an unusable setting."""
        get_entry(self.model)  # an unknown architecture names the registered ones
        self.loss = TrainLoss.check(self.loss, "loss")
        self.schedule = Schedule.check(self.schedule, "schedule")
        self.amp = Autocast.check(self.amp, "--amp mode")
        self.simulate = Simulator.check(self.simulate, "--simulate choice")
        if not 0.0 <= self.ema < 1.0:
            raise InputError(f"--ema must be in [0, 1) (0 = off); found {self.ema}.")
        self.data.validate()
        return self


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def _make_scheduler(opt, o: TrainOptions):
    if o.schedule == "cyclic":
        return torch.optim.lr_scheduler.CyclicLR(opt, base_lr=o.lr_min, max_lr=o.lr, step_size_up=o.cycle_steps,
                                                 mode="triangular2", cycle_momentum=False)
    if o.schedule == "onecycle":
        if o.steps < 4:  # too short for a warm-up and a decay: the peak rate throughout
            return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        # each phase needs ≥ 2 steps (torch divides by the phase length minus one)
        pct = min(max(o.warmup, 2.5 / o.steps), 1.0 - 2.5 / o.steps)
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=o.steps, pct_start=pct,
                                                   div_factor=max(o.lr / o.lr_min, 1.0), final_div_factor=10.0)
    raise InputError(f"unknown schedule '{o.schedule}'; choose cyclic or onecycle.")


def init_weights(model) -> None:
    """He (Kaiming) normal initialisation for LeakyReLU(0.2) convs, zero biases.

    PyTorch's default (uniform, gain ≈ 1/√3 per layer, biases up to 1/√fan_in) shrinks the signal through
    PtyNet-S's 15 plain layers until the biases dominate; under bf16 autocast the tiny input-dependent part
    is then rounded away and the network learns a constant. Variance-preserving weights keep the input alive.
    """
    import math

    gain = torch.nn.init.calculate_gain("leaky_relu", 0.2)
    for mod in model.modules():
        if isinstance(mod, torch.nn.ConvTranspose2d):
            # PyTorch's fan-in for a transposed conv counts the wrong weight axis; each output pixel sees
            # in/groups channels × (k/stride)² taps.
            kh, kw = mod.kernel_size
            sh, sw = mod.stride
            fan_in = mod.in_channels // mod.groups * max(1.0, kh * kw / (sh * sw))
            torch.nn.init.normal_(mod.weight, 0.0, gain / math.sqrt(fan_in))
        elif isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
        else:
            continue
        if mod.bias is not None:
            torch.nn.init.zeros_(mod.bias)


def output_convs(model) -> list:
    """The conv layers that feed the output heads: the last conv, or each decoder's last conv (PtychoNN)."""
    if hasattr(model, "amplitude") and hasattr(model, "phase"):
        return [model.amplitude[-1], model.phase[-1]]
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    return convs[-1:]


def init_output_bias(model, amplitude_mean: float, phase_mean: float) -> bool:
    """Start the heads at the training objects' mean amplitude and phase (logit / atanh of the mean).

    Without this the phase head starts at 0 rad, ~1 rad from the data, and spends its first thousands of
    steps moving a bias. Returns False for architectures whose last layer has no bias (PtyNet-B).
    """
    import math

    convs = output_convs(model)
    heads = []
    if len(convs) == 2:  # PtychoNN: two decoders
        heads = [convs[0].bias, convs[1].bias]
    elif convs and convs[0].bias is not None and convs[0].out_channels == 2:
        heads = [convs[0].bias[0:1], convs[0].bias[1:2]]
    if not heads or any(h is None for h in heads):
        return False
    a = min(max(amplitude_mean, 1e-3), 1 - 1e-3)
    p = min(max(phase_mean / math.pi, -0.999), 0.999)
    with torch.no_grad():
        heads[0].fill_(math.log(a / (1 - a)))
        heads[1].fill_(math.atanh(p))
    return True


def _tensor(a, device) -> torch.Tensor:
    """A batch array on ``device``: numpy from the numpy sampler and the fixed sets, torch from the torch one."""
    return a.to(device) if torch.is_tensor(a) else torch.from_numpy(np.ascontiguousarray(a)).to(device)


def _forward(model, x, o: TrainOptions, device):
    x = _tensor(x, device)
    if o.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=o.amp == "bf16"):
        pa, pp = model(x)
    return pa.float(), pp.float()


def _loss(model, batch, o: TrainOptions, device, std) -> torch.Tensor:
    x, amp, pha, mask = batch
    pred = _forward(model, x, o, device)
    target = (_tensor(amp, device), _tensor(pha, device))
    return loss_function(o.loss)(pred, target, _tensor(mask, device), std,
                                 phase_mean_weight=o.phase_mean_weight,
                                 phase_weight=o.phase_weight)


@torch.no_grad()
def evaluate(model, val, o: TrainOptions, device, std, batch: int = 128) -> dict:
    """Validation loss plus the learning figures (``relative``, ``struct``; ≈ 1 when collapsed)."""
    was = model.training
    model.eval()
    preds = [_forward(model, val[0][s : s + batch], o, device) for s in range(0, len(val[0]), batch)]
    model.train(was)
    pred = tuple(torch.cat([p[c] for p in preds]) for c in (0, 1))
    target = (torch.from_numpy(val[1]).to(device), torch.from_numpy(val[2]).to(device))
    mask = torch.from_numpy(val[3]).to(device)
    kw = {"phase_mean_weight": o.phase_mean_weight, "phase_weight": o.phase_weight}
    loss = float(loss_function(o.loss)(pred, target, mask, std, **kw))
    return {"loss": loss, **learning_figures(pred, target, mask, std, o.loss, **kw)}


def evaluate_loss(model, val, o: TrainOptions, device, std=(1.0, 1.0)) -> float:
    return evaluate(model, val, o, device, std)["loss"]


def object_statistics(pool: list[np.ndarray]) -> tuple[tuple[float, float], tuple[float, float]]:
    """(mean, std) of the pool objects' amplitude and phase: the standardisation of the linear heads."""
    amp = np.concatenate([np.abs(o[::4, ::4]).ravel() for o in pool])
    pha = np.concatenate([np.angle(o[::4, ::4]).ravel() for o in pool])
    return (float(amp.mean()), float(pha.mean())), (max(float(amp.std()), 1e-3), max(float(pha.std()), 1e-3))


def prepare_heads(model, mean: tuple[float, float], std: tuple[float, float], options: TrainOptions) -> str:
    """Start the output at the training mean: standardised heads get the pool statistics and a zero last
    layer; bounded heads get their bias at logit/atanh of the mean (``init_bias``). Returns what was done."""
    heads = getattr(model, "heads", None)
    if heads is not None and hasattr(heads, "std"):
        with torch.no_grad():
            heads.mean.copy_(torch.tensor(mean))
            heads.std.copy_(torch.tensor(std))
            for last in output_convs(model):
                torch.nn.init.zeros_(last.weight)
                if last.bias is not None:
                    torch.nn.init.zeros_(last.bias)
        return "standardised linear heads (training-object mean/std), zero-initialised last layer"
    if options.init_bias and init_output_bias(model, *mean):
        return "bounded heads, bias at the training objects' mean"
    return "bounded heads"


def widen_input(state: dict, model) -> dict:
    """``state`` made to fit ``model`` when the only difference is a first conv with more input channels (a
    probe-conditioned model started from an unconditioned one): the new channels' weights start at zero, so
    the widened network computes what the old one did until training teaches it to use the probe."""
    own = model.state_dict()
    out = dict(state)
    for key, value in state.items():
        want = own.get(key)
        if (want is not None and value.ndim == 4 and want.ndim == 4 and value.shape[0] == want.shape[0]
                and value.shape[2:] == want.shape[2:] and value.shape[1] < want.shape[1]):
            wide = torch.zeros_like(want)
            wide[:, : value.shape[1]] = value
            out[key] = wide
    return out


def family_record(data: DataOptions) -> dict:
    """The manifest's ``probe_family``: which probes a conditioned model was trained on."""
    from ptyfast.physics.probe_family import ProbeFamily

    return {**ProbeFamily().describe(), "members": data.family_probes, "given_probe_share": data.given_probe_share}


def align_label_phase(labelled: dict, sampler, delta: float) -> str:
    """Add ``delta`` rad to every label phase (and the simulated pool objects): a reference reconstruction's
    global phase is arbitrary, so choose it where the continued model's outputs already are, instead of
    spending the first steps (and the learnt structure) on moving its mean."""
    for part in (labelled["train"], labelled["val"]):
        part.phase[...] = np.angle(np.exp(1j * (part.phase + delta)))
    for obj in labelled["pool"]:
        obj *= np.complex64(np.exp(1j * delta))
    return f"label phases shifted by {delta:+.3f} rad to the model's mean phase"


def train(
    images: list[Path],
    out_dir: Path,
    options: TrainOptions,
    *,
    probe: np.ndarray,
    resume: bool = False,
    progress: Callable[[int, dict], None] | None = None,
    labelled: dict | None = None,
    mix_simulated: float = 0.0,
) -> dict:
    """Train ``options.model``; write ``last.pt`` (resumable) and ``best.pt`` (lowest validation loss).

    ``labelled`` (from :func:`ptyfast.training.labels.build_labelled`) trains on measured patterns and
    reference-reconstruction labels instead of simulated objects; ``mix_simulated`` is then the fraction of
    each batch simulated from the references' objects (and ``images``, when given) with the scan's probe.

    Returns a summary dict (also stored in the manifest's ``training`` field).
    """
    rank, world = _dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    if options.threads:
        torch.set_num_threads(options.threads)
    if device.type == "cpu":
        keep_freed_memory()  # every step's activations and gradients reuse freed memory (ptyfast.allocator)
    options.validate()
    out_dir = Path(out_dir)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if options.init_from and Path(options.init_from).exists() and any(
            p.exists() and os.path.samefile(options.init_from, p) for p in (last_path, best_path)):
        raise InputError(f"--init-from {options.init_from} is a checkpoint this run writes over; copy it elsewhere "
                         "or write the run to another folder.")
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)

    # Data: images split by sorted order; the validation set uses held-out images only.
    files = list_images(images) if images else []
    arrays = [read_image(f) for f in files]
    n_val = int(round(len(arrays) * options.val_fraction)) if len(arrays) >= 4 and labelled is None else 0
    train_imgs, val_imgs = arrays[: len(arrays) - n_val], arrays[len(arrays) - n_val :]
    pool_rng = np.random.default_rng(options.seed)
    val_seed = options.seed if options.val_seed is None else options.val_seed
    if labelled is None:
        pool = build_pool(train_imgs, options.data, pool_rng)
        val_opts = DataOptions(**{**asdict(options.data), "pool_size": max(8, options.data.pool_size // 8)})
        val_pool = build_pool(val_imgs, val_opts, np.random.default_rng(val_seed + 10_000))
        val = fixed_set(PatternSampler(val_pool, probe, options.data, val_seed + 20_000), options.val_size)
        sampler = make_sampler(pool, probe, options.data, np.random.default_rng([options.seed, rank]), device,
                               options.simulate)
        obj_mean, std = object_statistics(pool)
    else:
        from ptyfast.training.labels import LabelledSampler

        lit = lit_mask(probe)
        tr, va = labelled["train"], labelled["val"]
        val = (va.x, va.amplitude, va.phase, np.broadcast_to(lit, va.amplitude.shape).astype(np.float32))
        simulated = None
        if mix_simulated > 0:
            sim_pool = labelled["pool"] + (build_pool(train_imgs, options.data, pool_rng) if train_imgs else [])
            simulated = PatternSampler(sim_pool, labelled["sim_probe"], options.data,
                                       np.random.default_rng([options.seed, rank]))
        sampler = LabelledSampler(tr, lit, np.random.default_rng([options.seed, rank]), simulated=simulated,
                                  mix=mix_simulated)
        amp, pha = tr.amplitude[:, lit], tr.phase[:, lit]
        obj_mean = (float(amp.mean()), float(pha.mean()))
        std = (max(float(amp.std()), 1e-3), max(float(pha.std()), 1e-3))

    torch.manual_seed(options.seed)
    model = build_model(options.model)
    options.data.conditioning = getattr(model, "CONDITIONING", "")
    if options.data.conditioning and labelled is not None:
        raise InputError(f"train --labels trains single-probe models; '{options.model}' is probe-conditioned: "
                         "reconstruct the scan with it directly (ptyfast reconstruct SCAN --probe REFINED.h5), or "
                         "train --labels a ptynet-s.")
    if options.data.conditioning and labelled is None:  # the samplers were made before the model: re-make them
        val = fixed_set(PatternSampler(val_pool, probe, options.data, val_seed + 20_000), options.val_size)
        sampler = make_sampler(pool, probe, options.data, np.random.default_rng([options.seed, rank]), device,
                               options.simulate)
    init_weights(model)
    heads = prepare_heads(model, obj_mean, std, options)
    if options.init_from:
        ck = read_checkpoint(options.init_from)
        try:
            model.load_state_dict(widen_input(ck["state_dict"], model))
        except RuntimeError:
            raise InputError(f"{options.init_from} does not hold '{options.model}' weights.") from None
        if hasattr(getattr(model, "heads", None), "std"):
            std = tuple(float(v) for v in model.heads.std)
            if labelled is not None:
                heads += "; " + align_label_phase(labelled, sampler, float(model.heads.mean[1]) - obj_mean[1])
        heads += f"; initialised from {Path(options.init_from).name}"
    model = model.to(device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=options.lr,
                           betas=getattr(getattr(model, "module", model), "ADAM_BETAS", (0.9, 0.999)))
    sched = _make_scheduler(opt, options)
    averaged = (torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(options.ema), use_buffers=True)
        if options.ema else None)
    step, best, history, elapsed = 0, float("inf"), [], 0.0
    if resume and last_path.exists():
        ck = read_checkpoint(last_path)
        model.load_state_dict(ck["state_dict"])
        if averaged is not None:
            if "ema_state_dict" not in ck:
                raise InputError(f"{last_path} was trained without --ema; resume it without --ema.")
            averaged.module.load_state_dict(ck["ema_state_dict"])
            averaged.n_averaged.fill_(max(ck["step"], 1))
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        step, best, history, elapsed = ck["step"], ck["best_val"], ck["history"], ck["elapsed"]
        sampler.rng = np.random.default_rng([options.seed, rank, step])
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)

    manifest = Manifest(
        architecture=options.model, input_size=tuple(probe.shape), probe_sha256=probe_hash(probe),
        preprocessing={"transform": options.data.transform, "normalise": options.data.normalise},
        phase_offsets="free" if options.loss == "lit" else "absolute",
        amplitude_range=(0.0, 2.0) if heads.startswith("standardised") else (0.0, 1.0),
        probe_photons=float(np.sum(np.abs(probe) ** 2)), object_amplitude_range=tuple(options.data.amplitude_range),
        object_phase_range=tuple(options.data.phase_range), ptyfast_version=__version__,
        refined_probe_sha256=probe_hash(labelled["refined_probe"]) if labelled else "",
        conditioning=options.data.conditioning,
        probe_family=family_record(options.data) if options.data.conditioning else {},
    )

    def summary(val_loss: float) -> dict:
        return {
            "steps": step, "batch": options.batch * world, "patterns_seen": step * options.batch * world,
            "val_loss": val_loss, "best_val_loss": best, "time_s": round(elapsed, 1),
            "hardware": f"{platform.machine()} {os.cpu_count()} cores" + (
                f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""),
            "processes": world, "amp": options.amp, "schedule": options.schedule, "lr": options.lr,
            "lr_min": options.lr_min, "images_train": len(train_imgs), "images_val": len(val_imgs),
            **({"labelled_frames_train": len(labelled["train"].x), "labelled_frames_val": len(labelled["val"].x),
                "labels": labelled.get("sources", []), "mix_simulated": mix_simulated} if labelled else {}),
            "procedural_fraction": options.data.procedural_fraction, "noise_fraction": options.data.noise_fraction,
            "random_probes": options.data.random_probes, "family_probes": options.data.family_probes,
            "given_probe_share": options.data.given_probe_share, "seed": options.seed, "val_seed": val_seed,
            "transform": options.data.transform, "photons": list(options.data.photons),
            "clean_photons": list(options.data.clean_photons) if options.data.clean_photons else None,
            "parameters": count_parameters(getattr(model, "module", model)), "torch": torch.__version__,
            "simulator": f"torch ({sampler.device})" if hasattr(sampler, "device") else "numpy",
            "loss": options.loss, "phase_mean_weight": options.phase_mean_weight,
            "phase_weight": options.phase_weight, "ema": options.ema, "heads": heads,
            "init_from": options.init_from and Path(options.init_from).name,
            "object_mean": list(obj_mean), "object_std": list(std), **figures,
        }

    figures: dict = {}

    def kept():  # the weights validated and written to best.pt: the running average when --ema is on
        return averaged.module if averaged is not None else getattr(model, "module", model)

    def validate(train_loss: float) -> float:
        nonlocal figures
        f = evaluate(kept(), val, options, device, std)
        figures = {"val_relative": round(f["relative"], 4), "val_struct_amplitude": round(f["struct_amplitude"], 4),
                   "val_struct_phase": round(f["struct_phase"], 4)}
        history.append((step, train_loss, f["loss"], f["relative"], f["struct_amplitude"], f["struct_phase"]))
        if rank == 0:  # one JSON line per validation: the training curve, readable while training runs
            with open(out_dir / "log.jsonl", "a") as fh:
                fh.write(json.dumps({"step": step, "patterns": step * options.batch * world,
                                     "time_s": round(time.perf_counter() - t0, 1), "train_loss": train_loss,
                                     "val_loss": f["loss"], **f}) + "\n")
        return f["loss"]

    t0 = time.perf_counter() - elapsed
    if step == 0:  # the untrained model's validation loss anchors the curve
        (out_dir / "log.jsonl").unlink(missing_ok=True)
        validate(float("nan"))
    model.train()
    window_t, window_n = time.perf_counter(), 0
    while step < options.steps:
        loss = _loss(model, sampler.sample(options.batch), options, device, std)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if options.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), options.clip)
        opt.step()
        sched.step()
        if averaged is not None:
            averaged.update_parameters(model)
        step += 1
        window_n += options.batch * world
        info = {"loss": float(loss.detach()), "lr": sched.get_last_lr()[0]}
        if step % options.val_every == 0 or step == options.steps:
            elapsed = time.perf_counter() - t0
            vl = validate(float(loss.detach()))
            info["val"] = vl
            info["relative"], info["struct"] = history[-1][3], 0.5 * (history[-1][4] + history[-1][5])
            if rank == 0:
                if vl < best:
                    best = vl
                    manifest.training = summary(vl)
                    save_checkpoint(best_path, kept(), manifest)
                manifest.training = summary(vl)
                ema_state = {"ema_state_dict": {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                                                for k, v in averaged.module.state_dict().items()}} if averaged else {}
                save_checkpoint(last_path, model, manifest, **ema_state, optimizer=opt.state_dict(),
                                scheduler=sched.state_dict(), step=step, best_val=best, history=history,
                                elapsed=elapsed, options=asdict(options))
        now = time.perf_counter()
        if now - window_t > 2.0:
            info["patterns_per_s"] = window_n / (now - window_t)
            window_t, window_n = now, 0
        if progress is not None and rank == 0:
            progress(step, info)
    elapsed = time.perf_counter() - t0
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return {**summary(history[-1][2] if history else float("nan")), "history": history,
            "best": str(best_path), "last": str(last_path)}
