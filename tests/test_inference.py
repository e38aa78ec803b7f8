"""The CPU inference module: BatchNorm folded, layers in their precision, traced to TorchScript."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the inference module is PyTorch's")
from torch import nn  # noqa: E402

from ptyfast.models import build_model  # noqa: E402
from ptyfast.models.inference import fold_batchnorm, inference_module  # noqa: E402


def _with_random_statistics(arch: str, seed: int = 0) -> nn.Module:
    """``arch`` with random weights and BatchNorm statistics far from the identity (so folding is tested)."""
    torch.manual_seed(seed)
    model = build_model(arch)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.2, 3.0)
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-0.3, 0.3)
    return model.eval()


@pytest.mark.parametrize("arch", ["ptynet-s", "ptychonn-recipe"])
def test_folding_batchnorm_keeps_the_outputs_and_removes_every_batchnorm_after_a_conv(arch):
    """Folded into the convolutions before them (grouped transposed ones included), the BatchNorms leave the
    fp32 outputs unchanged to rounding."""
    model = _with_random_statistics(arch)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is left as it was
    x = torch.rand(3, 1, 128, 128) * 3
    with torch.inference_mode():
        for a, b in zip(model(x), folded(x)):
            assert float((a - b).abs().max()) < 1e-4 * max(float(a.abs().max()), 1.0)


def test_traced_module_equals_its_eager_form_in_fp32_and_bf16_is_close():
    model = _with_random_statistics("ptynet-s", seed=1)
    x = torch.rand(5, 1, 128, 128) * 3
    with torch.inference_mode():
        want = model(x)
    traced, note = inference_module(model, torch.zeros(2, 1, 128, 128), channels_last=True)
    assert note is None and isinstance(traced, torch.jit.ScriptModule)
    with torch.inference_mode():
        got = traced(x.contiguous(memory_format=torch.channels_last))  # another batch size than traced with
    assert all(float((a - b).abs().max()) < 1e-4 for a, b in zip(got, want))
    bf16, note = inference_module(model, torch.zeros(2, 1, 128, 128), dtype=torch.bfloat16, channels_last=True)
    assert note is None
    with torch.inference_mode():
        amp, phase = bf16(x.contiguous(memory_format=torch.channels_last))
    assert amp.dtype == phase.dtype == torch.float32  # the standardised heads stay fp32, as under autocast
    assert float((amp - want[0]).abs().max()) < 0.05 and float((phase - want[1]).abs().max()) < 0.1


class _TinyConv(nn.Module):
    """One 3×3 convolution to two channels; the subclasses' forward passes are what a trace gets wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)


class _Untraceable(_TinyConv):
    def forward(self, x):
        y = self.conv(x)
        return {"amplitude": y[:, 0]}, "a string is not a tensor"


def test_a_module_that_cannot_be_traced_runs_eager_and_says_why():
    module, note = inference_module(_Untraceable(), torch.zeros(2, 1, 8, 8))
    assert not isinstance(module, torch.jit.ScriptModule) and "eager PyTorch (tracing failed" in note
    out, _ = module(torch.ones(1, 1, 8, 8))
    assert out["amplitude"].shape == (1, 8, 8)


class _DependsOnItsInput(_TinyConv):
    """Control flow on the input's values: a trace keeps the branch its example took."""

    def forward(self, x):
        y = self.conv(x)
        return (y[:, 0], y[:, 1]) if x.mean() > 1 else (-y[:, 0], -y[:, 1])


def test_a_trace_that_misses_what_the_model_does_is_caught_and_runs_eager():
    module, note = inference_module(_DependsOnItsInput(), torch.zeros(2, 1, 8, 8))  # traced on the other branch
    assert not isinstance(module, torch.jit.ScriptModule) and "outputs differed" in note
