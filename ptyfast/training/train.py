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

Modules by job: :mod:`~ptyfast.training.options` (the options), :mod:`~ptyfast.training.heads` (where the network
starts), :mod:`~ptyfast.training.steps` (forward, loss, validation, schedule) and this one (the run: data, network,
optimiser, checkpoints, the loop).
"""


from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from ptyfast import __version__
from ptyfast.allocator import keep_freed_memory
from ptyfast.errors import InputError
from ptyfast.io.images import read_image
from ptyfast.models import build_model, count_parameters
from ptyfast.models.checkpoint import read_checkpoint, save_checkpoint
from ptyfast.models.manifest import Manifest, probe_hash
from ptyfast.training.data import DataOptions, PatternSampler, build_pool, fixed_set, list_images, lit_mask
from ptyfast.training.heads import (align_label_phase, init_output_bias, init_weights, object_statistics,
                                    output_convs, prepare_heads, widen_input)
from ptyfast.training.options import TrainOptions
from ptyfast.training.steps import batch_loss, evaluate, evaluate_loss, forward, make_scheduler
from ptyfast.training.torch_data import make_sampler

__all__ = [
    "TrainOptions", "align_label_phase", "evaluate", "evaluate_loss", "family_record", "init_output_bias",
    "init_weights", "object_statistics", "output_convs", "prepare_heads", "train", "widen_input",
]

# The names tests and benchmarks import from here.
_forward, _loss, _make_scheduler = forward, batch_loss, make_scheduler


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def family_record(data: DataOptions) -> dict:
    """The manifest's ``probe_family``: which probes a conditioned model was trained on."""
    from ptyfast.physics.probe_family import ProbeFamily

    return {**ProbeFamily().describe(), "members": data.family_probes, "given_probe_share": data.given_probe_share}


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
    run = _Training(out_dir, options, probe, labelled, mix_simulated)
    run.load_data(images)
    run.build_network()
    run.prepare_optimiser(resume)
    run.loop(progress)
    return run.finish()


class _Training:
    """One training run: where it runs (rank, world, device, output folder), its data, the network, optimiser,
    schedule and weight average, and the progress so far (step, best validation loss, history, time)."""

    def __init__(self, out_dir, options: TrainOptions, probe: np.ndarray, labelled: dict | None,
                 mix_simulated: float) -> None:
        self.options, self.probe, self.labelled, self.mix_simulated = options, probe, labelled, mix_simulated
        self.rank, self.world = _dist_info()
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available()
                                   else "cpu")
        if options.threads:
            torch.set_num_threads(options.threads)
        if self.device.type == "cpu":
            keep_freed_memory()  # every step's activations and gradients reuse freed memory (ptyfast.allocator)
        options.validate()
        self.out_dir = Path(out_dir)
        self.last_path, self.best_path = self.out_dir / "last.pt", self.out_dir / "best.pt"
        if options.init_from and Path(options.init_from).exists() and any(
                p.exists() and os.path.samefile(options.init_from, p) for p in (self.last_path, self.best_path)):
            raise InputError(f"--init-from {options.init_from} is a checkpoint this run writes over; copy it "
                             "elsewhere or write the run to another folder.")
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.step, self.best, self.history, self.elapsed, self.figures = 0, float("inf"), [], 0.0, {}

    def _simulated_sets(self, pool, val_pool) -> None:
        """The fixed validation set and the training sampler simulated from the object pools."""
        o = self.options
        self.val = fixed_set(PatternSampler(val_pool, self.probe, o.data, self.val_seed + 20_000), o.val_size)
        self.sampler = make_sampler(pool, self.probe, o.data, np.random.default_rng([o.seed, self.rank]),
                                    self.device, o.simulate)

    def load_data(self, images: list[Path]) -> None:
        """Images split by sorted order (the validation set uses held-out images only), or the labelled frames
        with simulated patterns mixed in; the objects' statistics start the heads."""
        o, labelled = self.options, self.labelled
        files = list_images(images) if images else []
        arrays = [read_image(f) for f in files]
        n_val = int(round(len(arrays) * o.val_fraction)) if len(arrays) >= 4 and labelled is None else 0
        train_imgs, val_imgs = arrays[: len(arrays) - n_val], arrays[len(arrays) - n_val :]
        self.n_images = (len(train_imgs), len(val_imgs))
        pool_rng = np.random.default_rng(o.seed)
        self.val_seed = o.seed if o.val_seed is None else o.val_seed
        self.pools = None
        if labelled is None:
            pool = build_pool(train_imgs, o.data, pool_rng)
            val_opts = DataOptions(**{**asdict(o.data), "pool_size": max(8, o.data.pool_size // 8)})
            val_pool = build_pool(val_imgs, val_opts, np.random.default_rng(self.val_seed + 10_000))
            self.pools = (pool, val_pool)
            self._simulated_sets(pool, val_pool)
            self.obj_mean, self.std = object_statistics(pool)
            return
        from ptyfast.training.labels import LabelledSampler

        lit = lit_mask(self.probe)
        tr, va = labelled["train"], labelled["val"]
        self.val = (va.x, va.amplitude, va.phase, np.broadcast_to(lit, va.amplitude.shape).astype(np.float32))
        simulated = None
        if self.mix_simulated > 0:
            sim_pool = labelled["pool"] + (build_pool(train_imgs, o.data, pool_rng) if train_imgs else [])
            simulated = PatternSampler(sim_pool, labelled["sim_probe"], o.data,
                                       np.random.default_rng([o.seed, self.rank]))
        self.sampler = LabelledSampler(tr, lit, np.random.default_rng([o.seed, self.rank]), simulated=simulated,
                                       mix=self.mix_simulated)
        amp, pha = tr.amplitude[:, lit], tr.phase[:, lit]
        self.obj_mean = (float(amp.mean()), float(pha.mean()))
        self.std = (max(float(amp.std()), 1e-3), max(float(pha.std()), 1e-3))

    def build_network(self) -> None:
        """The network, seeded, initialised, its heads at the objects' mean (or the weights of ``init_from``),
        on the device."""
        o, labelled = self.options, self.labelled
        torch.manual_seed(o.seed)
        model = build_model(o.model)
        o.data.conditioning = getattr(model, "CONDITIONING", "")
        if o.data.conditioning and labelled is not None:
            raise InputError(f"train --labels trains single-probe models; '{o.model}' is probe-conditioned: "
                             "reconstruct the scan with it directly (ptyfast reconstruct SCAN --probe REFINED.h5), or "
                             "train --labels a ptynet-s.")
        if o.data.conditioning and labelled is None:  # the samplers were made before the model: re-make them
            self._simulated_sets(*self.pools)
        init_weights(model)
        heads = prepare_heads(model, self.obj_mean, self.std, o)
        if o.init_from:
            ck = read_checkpoint(o.init_from)
            try:
                model.load_state_dict(widen_input(ck["state_dict"], model))
            except RuntimeError:
                raise InputError(f"{o.init_from} does not hold '{o.model}' weights.") from None
            if hasattr(getattr(model, "heads", None), "std"):
                self.std = tuple(float(v) for v in model.heads.std)
                if labelled is not None:
                    heads += "; " + align_label_phase(labelled, self.sampler,
                                                      float(model.heads.mean[1]) - self.obj_mean[1])
            heads += f"; initialised from {Path(o.init_from).name}"
        model = model.to(self.device)
        if o.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model, self.heads = model, heads

    def prepare_optimiser(self, resume: bool) -> None:
        """Adam, the schedule and the weight average (``ema``); the state of ``last.pt`` when resuming; DDP
        under ``torchrun``; the manifest the checkpoints carry."""
        o, model = self.options, self.model
        self.opt = torch.optim.Adam(model.parameters(), lr=o.lr,
                                    betas=getattr(getattr(model, "module", model), "ADAM_BETAS", (0.9, 0.999)))
        self.sched = make_scheduler(self.opt, o)
        self.averaged = (torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(o.ema), use_buffers=True)
            if o.ema else None)
        if resume and self.last_path.exists():
            ck = read_checkpoint(self.last_path)
            model.load_state_dict(ck["state_dict"])
            if self.averaged is not None:
                if "ema_state_dict" not in ck:
                    raise InputError(f"{self.last_path} was trained without --ema; resume it without --ema.")
                self.averaged.module.load_state_dict(ck["ema_state_dict"])
                self.averaged.n_averaged.fill_(max(ck["step"], 1))
            self.opt.load_state_dict(ck["optimizer"])
            self.sched.load_state_dict(ck["scheduler"])
            self.step, self.best, self.history, self.elapsed = ck["step"], ck["best_val"], ck["history"], ck["elapsed"]
            self.sampler.rng = np.random.default_rng([o.seed, self.rank, self.step])
        if self.world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(model)
        self.manifest = self._manifest()

    def _manifest(self) -> Manifest:
        o, probe, labelled = self.options, self.probe, self.labelled
        return Manifest(
            architecture=o.model, input_size=tuple(probe.shape), probe_sha256=probe_hash(probe),
            preprocessing={"transform": o.data.transform, "normalise": o.data.normalise},
            phase_offsets="free" if o.loss == "lit" else "absolute",
            amplitude_range=(0.0, 2.0) if self.heads.startswith("standardised") else (0.0, 1.0),
            probe_photons=float(np.sum(np.abs(probe) ** 2)), object_amplitude_range=tuple(o.data.amplitude_range),
            object_phase_range=tuple(o.data.phase_range), ptyfast_version=__version__,
            refined_probe_sha256=probe_hash(labelled["refined_probe"]) if labelled else "",
            conditioning=o.data.conditioning,
            probe_family=family_record(o.data) if o.data.conditioning else {},
        )

    def summary(self, val_loss: float) -> dict:
        """The run's record (stored in the manifest's ``training``) with ``val_loss`` as the latest."""
        o, labelled, world, step = self.options, self.labelled, self.world, self.step
        return {
            "steps": step, "batch": o.batch * world, "patterns_seen": step * o.batch * world,
            "val_loss": val_loss, "best_val_loss": self.best, "time_s": round(self.elapsed, 1),
            "hardware": f"{platform.machine()} {os.cpu_count()} cores" + (
                f", {torch.cuda.get_device_name()}" if self.device.type == "cuda" else ""),
            "processes": world, "amp": o.amp, "schedule": o.schedule, "lr": o.lr,
            "lr_min": o.lr_min, "images_train": self.n_images[0], "images_val": self.n_images[1],
            **({"labelled_frames_train": len(labelled["train"].x), "labelled_frames_val": len(labelled["val"].x),
                "labels": labelled.get("sources", []), "mix_simulated": self.mix_simulated} if labelled else {}),
            "procedural_fraction": o.data.procedural_fraction, "noise_fraction": o.data.noise_fraction,
            "random_probes": o.data.random_probes, "family_probes": o.data.family_probes,
            "given_probe_share": o.data.given_probe_share, "seed": o.seed, "val_seed": self.val_seed,
            "transform": o.data.transform, "photons": list(o.data.photons),
            "clean_photons": list(o.data.clean_photons) if o.data.clean_photons else None,
            "parameters": count_parameters(getattr(self.model, "module", self.model)), "torch": torch.__version__,
            "simulator": f"torch ({self.sampler.device})" if hasattr(self.sampler, "device") else "numpy",
            "loss": o.loss, "phase_mean_weight": o.phase_mean_weight,
            "phase_weight": o.phase_weight, "ema": o.ema, "heads": self.heads,
            "init_from": o.init_from and Path(o.init_from).name,
            "object_mean": list(self.obj_mean), "object_std": list(self.std), **self.figures,
        }

    def kept(self):
        """The weights validated and written to best.pt: the running average when --ema is on."""
        return self.averaged.module if self.averaged is not None else getattr(self.model, "module", self.model)

    def validate(self, train_loss: float) -> float:
        """Validate the kept weights: the history, the figures, one line of ``log.jsonl``; returns the loss."""
        o, step = self.options, self.step
        f = evaluate(self.kept(), self.val, o, self.device, self.std)
        self.figures = {"val_relative": round(f["relative"], 4),
                        "val_struct_amplitude": round(f["struct_amplitude"], 4),
                        "val_struct_phase": round(f["struct_phase"], 4)}
        self.history.append((step, train_loss, f["loss"], f["relative"], f["struct_amplitude"], f["struct_phase"]))
        if self.rank == 0:  # one JSON line per validation: the training curve, readable while training runs
            with open(self.out_dir / "log.jsonl", "a") as fh:
                fh.write(json.dumps({"step": step, "patterns": step * o.batch * self.world,
                                     "time_s": round(time.perf_counter() - self.t0, 1), "train_loss": train_loss,
                                     "val_loss": f["loss"], **f}) + "\n")
        return f["loss"]

    def save(self, val_loss: float) -> None:
        """``best.pt`` when ``val_loss`` is the lowest so far, and ``last.pt`` (resumable) always."""
        if val_loss < self.best:
            self.best = val_loss
            self.manifest.training = self.summary(val_loss)
            save_checkpoint(self.best_path, self.kept(), self.manifest)
        self.manifest.training = self.summary(val_loss)
        averaged = self.averaged
        ema_state = {"ema_state_dict": {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                                        for k, v in averaged.module.state_dict().items()}} if averaged else {}
        save_checkpoint(self.last_path, self.model, self.manifest, **ema_state, optimizer=self.opt.state_dict(),
                        scheduler=self.sched.state_dict(), step=self.step, best_val=self.best, history=self.history,
                        elapsed=self.elapsed, options=asdict(self.options))

    def loop(self, progress) -> None:
        """Optimiser steps up to ``options.steps``, validating (and saving) every ``val_every`` and at the end."""
        o, model = self.options, self.model
        self.t0 = time.perf_counter() - self.elapsed
        if self.step == 0:  # the untrained model's validation loss anchors the curve
            (self.out_dir / "log.jsonl").unlink(missing_ok=True)
            self.validate(float("nan"))
        model.train()
        window_t, window_n = time.perf_counter(), 0
        while self.step < o.steps:
            loss = batch_loss(model, self.sampler.sample(o.batch), o, self.device, self.std)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if o.clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip)
            self.opt.step()
            self.sched.step()
            if self.averaged is not None:
                self.averaged.update_parameters(model)
            self.step += 1
            window_n += o.batch * self.world
            info = {"loss": float(loss.detach()), "lr": self.sched.get_last_lr()[0]}
            if self.step % o.val_every == 0 or self.step == o.steps:
                self.elapsed = time.perf_counter() - self.t0
                vl = self.validate(float(loss.detach()))
                info["val"] = vl
                h = self.history[-1]
                info["relative"], info["struct"] = h[3], 0.5 * (h[4] + h[5])
                if self.rank == 0:
                    self.save(vl)
            now = time.perf_counter()
            if now - window_t > 2.0:
                info["patterns_per_s"] = window_n / (now - window_t)
                window_t, window_n = now, 0
            if progress is not None and self.rank == 0:
                progress(self.step, info)
        self.elapsed = time.perf_counter() - self.t0

    def finish(self) -> dict:
        """Leave the process group; the summary with the history and the checkpoints' paths."""
        if self.world > 1:
            dist.barrier()
            dist.destroy_process_group()
        history = self.history
        return {**self.summary(history[-1][2] if history else float("nan")), "history": history,
                "best": str(self.best_path), "last": str(self.last_path)}
