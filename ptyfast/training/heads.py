"""Where a network starts training: variance-preserving weights, output heads at the training objects' mean,
weights carried over from a narrower checkpoint, and label phases moved to a continued model's mean."""

from __future__ import annotations

import numpy as np
import torch

from ptyfast.training.options import TrainOptions

__all__ = ["align_label_phase", "init_output_bias", "init_weights", "object_statistics", "output_convs",
           "prepare_heads", "widen_input"]


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


def align_label_phase(labelled: dict, sampler, delta: float) -> str:
    """Add ``delta`` rad to every label phase (and the simulated pool objects): a reference reconstruction's
    global phase is arbitrary, so choose it where the continued model's outputs already are, instead of
    spending the first steps (and the learnt structure) on moving its mean."""
    for part in (labelled["train"], labelled["val"]):
        part.phase[...] = np.angle(np.exp(1j * (part.phase + delta)))
    for obj in labelled["pool"]:
        obj *= np.complex64(np.exp(1j * delta))
    return f"label phases shifted by {delta:+.3f} rad to the model's mean phase"
