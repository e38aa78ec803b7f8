"""A trained model made ready for CPU inference: BatchNorm folded into the convolutions, the layers cast to the
inference precision, and the whole forward pass compiled to one TorchScript graph.

Why: PtyNet-S runs a BatchNorm after 17 of its 18 convolutions; in eval mode each is a per-channel affine map,
so it folds exactly into the preceding convolution's weights and bias (fp32 outputs equal to ≈ 1e-6), which
removes 17 passes over the activations (model only, torch bf16, 2 threads: ≈ 25 % faster). And a TorchScript
graph runs the forward pass in C++ without Python's global interpreter lock: in eager mode every layer call
needs the lock, so reconstruct's stitching and reading threads (Python between their numpy calls) stall the
inference thread while the OpenMP workers spin — with a Python-busy thread beside it, eager inference ran
≈ 60 patterns/s here against ≈ 160 traced.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

CONVOLUTIONS = (nn.Conv2d, nn.ConvTranspose2d)


def fold_conv_bn(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    """One convolution equal (in eval mode) to ``conv`` followed by ``bn``: each output channel's weights and
    bias scaled by γ/√(σ² + ε), its bias shifted by β − μ·γ/√(σ² + ε). torch's own helper handles Conv2d;
    a transposed convolution's weight is (in, out/groups, kH, kW), so its output channel o = g·(out/groups) + j
    is scaled group by group here (torch's helper assumes one group)."""
    if isinstance(conv, nn.Conv2d):
        return fuse_conv_bn_eval(conv, bn)
    fused = copy.deepcopy(conv)
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        w, g = fused.weight, fused.groups
        per_group = w.shape[1]
        fused.weight.copy_((w.reshape(g, w.shape[0] // g, per_group, *w.shape[2:])
                            * scale.reshape(g, 1, per_group, 1, 1)).reshape(w.shape))
        bias = fused.bias if fused.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
    return fused


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) in which every BatchNorm2d that directly follows a convolution in an
    ``nn.Sequential`` is folded into it (:func:`fold_conv_bn`); other layers are kept as they are."""
    folded = copy.deepcopy(model).eval()

    def visit(module: nn.Module) -> None:
        for name, child in module.named_children():
            visit(child)
            if isinstance(child, nn.Sequential):
                layers, kept, i = list(child), [], 0
                while i < len(layers):
                    if (isinstance(layers[i], CONVOLUTIONS) and i + 1 < len(layers)
                            and isinstance(layers[i + 1], nn.BatchNorm2d)):
                        kept.append(fold_conv_bn(layers[i], layers[i + 1]))
                        i += 2
                    else:
                        kept.append(layers[i])
                        i += 1
                setattr(module, name, nn.Sequential(*kept))

    visit(folded)
    return folded


class _InPrecision(nn.Module):
    """``model`` with its weighted layers in ``dtype`` and the input cast to it; the output heads' buffers (e.g.
    the standardised heads' mean and std) stay fp32, as under autocast."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype
        for layer in model.modules():
            if isinstance(layer, (*CONVOLUTIONS, nn.Linear, nn.BatchNorm2d)):
                layer.to(dtype)

    def forward(self, x: torch.Tensor):
        return self.model(x.to(self.dtype))


def inference_module(model: nn.Module, example: torch.Tensor, *, dtype: torch.dtype = torch.float32,
                     channels_last: bool = False):
    """(module, note): ``model`` with BatchNorm folded, its layers in ``dtype``, traced on ``example`` and frozen
    (TorchScript). The traced graph is checked against the eager module it came from on other, random input of
    the same shape (within rounding: 1e-4 of the outputs' scale in fp32, 2e-2 in a reduced precision, where the
    frozen graph may round in another order); if tracing fails or they differ, the eager module is returned with
    a note saying why (None when traced)."""
    module = fold_batchnorm(model)
    if dtype != torch.float32:
        module = _InPrecision(module, dtype)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    module = module.to(memory_format=memory).eval()
    example = example.contiguous(memory_format=memory)
    check = (3 * torch.rand(example.shape, generator=torch.Generator().manual_seed(0))).contiguous(memory_format=memory)
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    with torch.inference_mode():
        want = module(check)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is in maintenance; see the module
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # what a trace may miss, the check below finds
            traced = torch.jit.freeze(torch.jit.trace(module, example, check_trace=False))
            for _ in range(3):  # TorchScript's profiling executor optimises the graph on its first calls
                got = traced(check)
        same = all(float((a.float() - b.float()).abs().max()) <= tolerance * max(float(b.float().abs().max()), 1.0)
                   for a, b in zip(got, want))
    except Exception as exc:  # noqa: BLE001 - any tracing failure leaves the eager module, which works
        return module, f"eager PyTorch (tracing failed: {type(exc).__name__})"
    if not same:
        return module, "eager PyTorch (the traced graph's outputs differed from it)"
    return traced, None
