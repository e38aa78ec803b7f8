"""Supervised training loop (the paper's recipe by default) with bf16 autocast, channels-last, a validation
split with best-checkpoint selection, ``--resume``, and DistributedDataParallel under ``torchrun``.

Recipe (Pan et al. 2023, Methods): Adam, cyclic learning rate (triangular2 between ``lr_min`` and ``lr``),
loss = MSE(amplitude) + MSE(phase). Gradients are clipped (``clip``) because the bounded heads saturate at
high learning rates.
"""

from __future__ import annotations

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
from ptyfast.errors import InputError
from ptyfast.io.images import read_image
from ptyfast.models import build_model, count_parameters, get_entry
from ptyfast.models.checkpoint import read_checkpoint, save_checkpoint
from ptyfast.models.manifest import Manifest, probe_hash
from ptyfast.training.data import DataOptions, PatternSampler, build_pool, fixed_set, list_images


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
    """

    model: str = "ptynet-s"
    steps: int = 2000
    batch: int = 32
    lr: float = 1e-4
    lr_min: float = 1e-5
    schedule: str = "cyclic"
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
    data: DataOptions = field(default_factory=DataOptions)


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def _make_scheduler(opt, o: TrainOptions):
    if o.schedule == "cyclic":
        return torch.optim.lr_scheduler.CyclicLR(opt, base_lr=o.lr_min, max_lr=o.lr, step_size_up=o.cycle_steps,
                                                 mode="triangular2", cycle_momentum=False)
    if o.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=o.steps, pct_start=0.05,
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


def init_output_bias(model, amplitude_mean: float, phase_mean: float) -> bool:
    """Start the heads at the training objects' mean amplitude and phase (logit / atanh of the mean).

    Without this the phase head starts at 0 rad, ~1 rad from the data, and spends its first thousands of
    steps moving a bias. Returns False for architectures whose last layer has no bias (PtyNet-B).
    """
    import math

    last = None
    for mod in model.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            last = mod
    heads = []
    if hasattr(model, "amplitude") and hasattr(model, "phase"):  # PtychoNN: two decoders
        heads = [model.amplitude[-1].bias, model.phase[-1].bias]
    elif last is not None and last.bias is not None and last.out_channels == 2:
        heads = [last.bias[0:1], last.bias[1:2]]
    if not heads or any(h is None for h in heads):
        return False
    a = min(max(amplitude_mean, 1e-3), 1 - 1e-3)
    p = min(max(phase_mean / math.pi, -0.999), 0.999)
    with torch.no_grad():
        heads[0].fill_(math.log(a / (1 - a)))
        heads[1].fill_(math.atanh(p))
    return True


def _loss(model, x, amp, pha, o: TrainOptions, device) -> torch.Tensor:
    x = torch.from_numpy(x).to(device)
    if o.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=o.amp == "bf16"):
        pa, pp = model(x)
    return F.mse_loss(pa.float(), torch.from_numpy(amp).to(device)) + F.mse_loss(pp.float(), torch.from_numpy(pha).to(device))


@torch.no_grad()
def evaluate_loss(model, val, o: TrainOptions, device, batch: int = 128) -> float:
    was = model.training
    model.eval()
    total = 0.0
    n = len(val[0])
    for s in range(0, n, batch):
        part = [v[s : s + batch] for v in val]
        total += float(_loss(model, *part, o, device)) * len(part[0])
    model.train(was)
    return total / n


def train(
    images: list[Path],
    out_dir: Path,
    options: TrainOptions,
    *,
    probe: np.ndarray,
    resume: bool = False,
    progress: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train ``options.model``; write ``last.pt`` (resumable) and ``best.pt`` (lowest validation loss).

    Returns a summary dict (also stored in the manifest's ``training`` field).
    """
    rank, world = _dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    if options.threads:
        torch.set_num_threads(options.threads)
    get_entry(options.model)  # validates the name
    out_dir = Path(out_dir)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)

    # Data: images split by sorted order; the validation set uses held-out images only.
    files = list_images(images) if images else []
    arrays = [read_image(f) for f in files]
    n_val = int(round(len(arrays) * options.val_fraction)) if len(arrays) >= 4 else 0
    train_imgs, val_imgs = arrays[: len(arrays) - n_val], arrays[len(arrays) - n_val :]
    pool_rng = np.random.default_rng(options.seed)
    pool = build_pool(train_imgs, options.data, pool_rng)
    val_opts = DataOptions(**{**asdict(options.data), "pool_size": max(8, options.data.pool_size // 8)})
    val_pool = build_pool(val_imgs, val_opts, np.random.default_rng(options.seed + 10_000))
    val = fixed_set(PatternSampler(val_pool, probe, options.data, options.seed + 20_000), options.val_size)
    sampler = PatternSampler(pool, probe, options.data, np.random.default_rng([options.seed, rank]))

    torch.manual_seed(options.seed)
    model = build_model(options.model)
    init_weights(model)
    if options.init_bias:
        init_output_bias(model, float(np.mean(options.data.amplitude_range)), float(np.mean(options.data.phase_range)))
    model = model.to(device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=options.lr)
    sched = _make_scheduler(opt, options)
    step, best, history, elapsed = 0, float("inf"), [], 0.0
    if resume and last_path.exists():
        ck = read_checkpoint(last_path)
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        step, best, history, elapsed = ck["step"], ck["best_val"], ck["history"], ck["elapsed"]
        sampler.rng = np.random.default_rng([options.seed, rank, step])
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)

    manifest = Manifest(
        architecture=options.model, input_size=tuple(probe.shape), probe_sha256=probe_hash(probe),
        preprocessing={"transform": options.data.transform, "normalise": options.data.normalise},
        probe_photons=float(np.sum(np.abs(probe) ** 2)), object_amplitude_range=tuple(options.data.amplitude_range),
        object_phase_range=tuple(options.data.phase_range), ptyfast_version=__version__,
    )

    def summary(val_loss: float) -> dict:
        return {
            "steps": step, "batch": options.batch * world, "patterns_seen": step * options.batch * world,
            "val_loss": val_loss, "best_val_loss": best, "time_s": round(elapsed, 1),
            "hardware": f"{platform.machine()} {os.cpu_count()} cores" + (
                f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""),
            "processes": world, "amp": options.amp, "schedule": options.schedule, "lr": options.lr,
            "lr_min": options.lr_min, "images_train": len(train_imgs), "images_val": len(val_imgs),
            "procedural_fraction": options.data.procedural_fraction, "noise_fraction": options.data.noise_fraction,
            "random_probes": options.data.random_probes, "seed": options.seed,
            "transform": options.data.transform, "photons": list(options.data.photons),
            "clean_photons": list(options.data.clean_photons) if options.data.clean_photons else None,
            "parameters": count_parameters(getattr(model, "module", model)), "torch": torch.__version__,
        }

    if step == 0:  # the untrained model's validation loss anchors the curve
        history.append((0, float("nan"), evaluate_loss(getattr(model, "module", model), val, options, device)))
    model.train()
    t0 = time.perf_counter() - elapsed
    window_t, window_n = time.perf_counter(), 0
    while step < options.steps:
        x, a, p = sampler.sample(options.batch)
        loss = _loss(model, x, a, p, options, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if options.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), options.clip)
        opt.step()
        sched.step()
        step += 1
        window_n += options.batch * world
        info = {"loss": float(loss.detach()), "lr": sched.get_last_lr()[0]}
        if step % options.val_every == 0 or step == options.steps:
            elapsed = time.perf_counter() - t0
            vl = evaluate_loss(getattr(model, "module", model), val, options, device)
            history.append((step, float(loss.detach()), vl))
            info["val"] = vl
            if rank == 0:
                if vl < best:
                    best = vl
                    manifest.training = summary(vl)
                    save_checkpoint(best_path, model, manifest)
                manifest.training = summary(vl)
                save_checkpoint(last_path, model, manifest, optimizer=opt.state_dict(),
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
