"""What a fine-tuning run keeps and reports: the best weights so far, the verdict sentence, the summary stored
in the manifest (``training["finetune"]``) and the fine-tuned network's manifest."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ptyfast.finetune.options import FinetuneOptions

__all__ = ["Kept", "finetuned_manifest", "json_float", "on_grid", "snapshot", "summary", "verdict"]


@dataclass
class Kept:
    """The best weights so far (by the held-out data error), with the scale and probe that went with them."""

    epoch: int
    error: float
    state: dict
    log_scale: float
    probe: object
    reconstruction: object


def snapshot(model) -> dict:
    """A detached copy of ``model``'s state (weights and buffers)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def json_float(v: float):
    """``v`` as a float, or None when it is not finite (JSON has no NaN)."""
    return float(v) if np.isfinite(v) else None


def on_grid(obj: np.ndarray, origin, grid_origin, shape) -> np.ndarray:
    """``obj`` (grid pixel (0, 0) at scan position ``origin``) placed on a grid of ``shape`` whose pixel (0, 0) is
    ``grid_origin`` (both origins are whole pixels; the object lies inside that grid)."""
    out = np.zeros(shape, np.complex64)
    dy, dx = (int(round(v)) for v in np.asarray(origin) - np.asarray(grid_origin))
    h, w = min(obj.shape[0], shape[0] - dy), min(obj.shape[1], shape[1] - dx)
    out[dy : dy + h, dx : dx + w] = obj[:h, :w]
    return out


def _fmt(e: float) -> str:
    return f"{e:.3g}" if np.isfinite(e) else ("∞" if e == float("inf") else "n/a")


def verdict(guard: bool, start: float, kept: float, lowest_later: float, kept_epoch: int, epochs_run: int,
            o: FinetuneOptions) -> str:
    """One plain sentence saying which weights fine-tuning returned and why."""
    stopped = (f" It stopped after {epochs_run} of {o.epochs} epochs ({o.patience} checks without a lower error)."
               if epochs_run < o.epochs else "")
    if not guard:
        return ("no frames were held out (val_fraction 0), so the weights after the last epoch were kept "
                "without a check.")
    if kept_epoch == 0:
        return (f"fine-tuning did not lower the held-out data error (ε {_fmt(start)} → {_fmt(lowest_later)}); "
                f"the starting weights were kept.{stopped}")
    return (f"fine-tuning lowered the held-out data error (ε {_fmt(start)} → {_fmt(kept)}); the weights of epoch "
            f"{kept_epoch} were kept.{stopped}")


def summary(o: FinetuneOptions, *, source: str, frames: int, frames_total: int, epochs_run: int, step: int,
            scale: float, scale_fit: float, r_before: float, r_after: float, held, error_start: float,
            error_kept: float, kept_epoch: int, history: list[dict], verdict: str, time_s: float, device) -> dict:
    """The record of one run stored in the fine-tuned manifest (``training["finetune"]``)."""
    import torch

    return {
        "scan": source, "frames": int(frames), "frames_total": int(frames_total), "subset": str(o.subset),
        "epochs": o.epochs, "epochs_run": epochs_run, "batch": o.batch, "lr": o.lr,
        "schedule": f"StepLR(step={step} epochs, gamma=0.5)",
        "loss": o.loss, "objective": o.objective, "guide_weight": o.guide_weight if o.objective == "guided" else None,
        "freeze": o.freeze, "learn_probe": o.learn_probe, "scale_mode": o.scale,
        "amplitude_scale": scale, "amplitude_scale_fit": float(scale_fit), "phase_anchor": o.phase_anchor,
        "r_factor_before": float(r_before), "r_factor_after": float(r_after),
        "val_fraction": o.val_fraction, "val_every": o.val_every, "patience": o.patience,
        "held_out_frames": [int(i) for i in held], "held_out_error_start": json_float(error_start),
        "held_out_error_kept": json_float(error_kept), "kept_epoch": int(kept_epoch),
        "validations": [[h["epoch"], json_float(h["held_out_error"])] for h in history if "held_out_error" in h],
        "verdict": verdict, "time_s": round(time_s, 2),
        "amp": o.amp, "batch_norm": "eval mode, running statistics frozen",
        "hardware": f"{platform.machine()} {os.cpu_count()} cores"
        + (f", {torch.cuda.get_device_name()}" if torch.device(device).type == "cuda" else ""),
        "torch": torch.__version__,
    }


def finetuned_manifest(manifest, summary: dict, *, source: str, frames: int, total: int, epochs: int,
                       probe: np.ndarray | None, held: int = 0):
    """The manifest of the fine-tuned network (``finetuned_on``, ``training["finetune"]``; a learned probe's
    hash and power when ``probe`` is given)."""
    from ptyfast import __version__
    from ptyfast.models.manifest import probe_hash

    kept_out = f" ({held} held out)" if held else ""
    new = replace(manifest, finetuned_on=f"{Path(source).name if source else 'scan'}: {frames} of {total} frames"
                                         f"{kept_out}, {epochs} epochs",
                  training={**(manifest.training or {}), "finetune": summary}, ptyfast_version=__version__)
    if probe is not None:
        new = replace(new, probe_sha256=probe_hash(probe), probe_photons=float(np.sum(np.abs(probe) ** 2)))
    return new
