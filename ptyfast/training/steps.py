"""One training step's parts and the validation: the network called under autocast (channels-last), the loss
of a batch, the validation loss with the learning figures, and the learning-rate schedule."""

from __future__ import annotations

import numpy as np
import torch

from ptyfast.errors import InputError
from ptyfast.training.loss import learning_figures, loss_function
from ptyfast.training.options import TrainOptions

__all__ = ["batch_loss", "evaluate", "evaluate_loss", "forward", "make_scheduler"]


def make_scheduler(opt, o: TrainOptions):
    """The learning-rate schedule of ``o.schedule`` on ``opt``: ``cyclic`` (triangular2) or ``onecycle``."""
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


def _tensor(a, device) -> torch.Tensor:
    """A batch array on ``device``: numpy from the numpy sampler and the fixed sets, torch from the torch one."""
    return a.to(device) if torch.is_tensor(a) else torch.from_numpy(np.ascontiguousarray(a)).to(device)


def forward(model, x, o: TrainOptions, device):
    """``model(x)`` on ``device`` (channels-last, bf16 autocast as ``o`` says) as fp32 (amplitude, phase)."""
    x = _tensor(x, device)
    if o.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=o.amp == "bf16"):
        pa, pp = model(x)
    return pa.float(), pp.float()


def batch_loss(model, batch, o: TrainOptions, device, std) -> torch.Tensor:
    """The training loss (``o.loss``) of one sampled ``batch`` (x, amplitude, phase, lit mask)."""
    x, amp, pha, mask = batch
    pred = forward(model, x, o, device)
    target = (_tensor(amp, device), _tensor(pha, device))
    return loss_function(o.loss)(pred, target, _tensor(mask, device), std,
                                 phase_mean_weight=o.phase_mean_weight,
                                 phase_weight=o.phase_weight)


@torch.no_grad()
def evaluate(model, val, o: TrainOptions, device, std, batch: int = 128) -> dict:
    """Validation loss plus the learning figures (``relative``, ``struct``; ≈ 1 when collapsed)."""
    was = model.training
    model.eval()
    preds = [forward(model, val[0][s : s + batch], o, device) for s in range(0, len(val[0]), batch)]
    model.train(was)
    pred = tuple(torch.cat([p[c] for p in preds]) for c in (0, 1))
    target = (torch.from_numpy(val[1]).to(device), torch.from_numpy(val[2]).to(device))
    mask = torch.from_numpy(val[3]).to(device)
    kw = {"phase_mean_weight": o.phase_mean_weight, "phase_weight": o.phase_weight}
    loss = float(loss_function(o.loss)(pred, target, mask, std, **kw))
    return {"loss": loss, **learning_figures(pred, target, mask, std, o.loss, **kw)}


def evaluate_loss(model, val, o: TrainOptions, device, std=(1.0, 1.0)) -> float:
    """The validation loss alone (:func:`evaluate`)."""
    return evaluate(model, val, o, device, std)["loss"]

