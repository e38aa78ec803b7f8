"""Training losses and the learning figures, restricted to what one far-field pattern determines.

One pattern I = |F(P·O)|² carries information about O only where the probe lights it, and not about the
patch's mean phase (a global phase factor leaves I unchanged). A full-window MSE is therefore mostly
irreducible, and its gradient pulls every output to the training mean (the collapse documented in
``docs/training.md``). The ``lit`` loss scores only the lit pixels (|P|² ≥ 10 % of the maximum, :func:`ptyfast.training.data.lit_mask`) and, per patch,
splits the phase error into its spatial variance (fully determined) and its squared mean (undetermined,
weight ``phase_mean_weight``); the amplitude's mean is determined (Σ I = Σ|P·O|²), so its full in-probe
MSE counts. Errors are divided by each channel's training-object standard deviation, so both channels weigh
the same unless ``phase_weight`` says otherwise (a model may spend more of its capacity on the phase).

Figures (per channel, on a validation set; both are 1 for an input-independent constant):

- ``relative``: the loss over the loss of the best constant prediction (the validation targets' mean).
- ``struct``: in-probe error with each patch's mean error removed, over the in-probe variance of the target
  within each patch. It ignores the undetermined offsets, so a collapsed network shows ≈ 1 at once.
"""

from __future__ import annotations

import torch

def _moments(err: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch masked mean and variance of ``err`` (B, H, W) → (B,), (B,)."""
    n = mask.sum((-2, -1)).clamp_min(1.0)
    mean = (err * mask).sum((-2, -1)) / n
    var = ((err - mean[:, None, None]) ** 2 * mask).sum((-2, -1)) / n
    return mean, var


def lit_loss(pred: tuple[torch.Tensor, torch.Tensor], target: tuple[torch.Tensor, torch.Tensor],
             mask: torch.Tensor, std: tuple[float, float], *, phase_mean_weight: float = 0.1,
             phase_weight: float = 1.0) -> torch.Tensor:
    """In-probe loss: amplitude MSE + ``phase_weight`` × phase (within-patch error variance + w·(mean error)²),
    in units of std."""
    loss = pred[0].new_zeros(())
    for c, mean_weight, weight in ((0, 1.0, 1.0), (1, phase_mean_weight, phase_weight)):
        err = (pred[c].float() - target[c]) / std[c]
        mean, var = _moments(err, mask)
        loss = loss + weight * (var + mean_weight * mean**2).mean()
    return loss


def mse_loss(pred, target, mask=None, std=None, **_) -> torch.Tensor:
    """The seed paper's loss: full-window MSE(amplitude) + MSE(phase), in object units."""
    return sum(torch.nn.functional.mse_loss(p.float(), t) for p, t in zip(pred, target))


def loss_function(name: str):
    return {"lit": lit_loss, "mse": mse_loss}[name]


@torch.no_grad()
def learning_figures(pred, target, mask, std, loss_name: str, **kw) -> dict:
    """``relative`` (loss / best-constant loss) and per-channel ``struct`` over a whole validation set."""
    fn = loss_function(loss_name)
    weight = mask if loss_name == "lit" else torch.ones_like(mask)
    const = tuple(torch.full_like(t, float((t * weight).sum() / weight.sum())) for t in target)
    out = {"relative": float(fn(pred, target, mask, std, **kw) / fn(const, target, mask, std, **kw).clamp_min(1e-12))}
    for c, name in ((0, "amplitude"), (1, "phase")):
        _, var_err = _moments(pred[c].float() - target[c], mask)
        _, var_true = _moments(target[c], mask)
        out[f"struct_{name}"] = float(var_err.sum() / var_true.sum().clamp_min(1e-12))
    out["struct"] = 0.5 * (out["struct_amplitude"] + out["struct_phase"])
    return out
