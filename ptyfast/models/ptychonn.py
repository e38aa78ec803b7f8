"""PtychoNN (Cherukara et al., Appl. Phys. Lett. 117, 044103, 2020): shared conv encoder (32/64/128,
max-pool) and two separate decoders (128/64/64, bilinear ×2 upsampling). Used on 128² inputs for a
like-for-like comparison with PtyNet-S.

Two variants share the layer table (as PtyNet-S's do):

- ``ptychonn`` (:class:`PtychoNN`, 1,247,074 parameters): the published network; heads sigmoid amplitude,
  π·tanh phase. The paper protocol trains this one.
- ``ptychonn-recipe`` (:class:`PtychoNNRecipe`, ptyfast's training recipe applied to PtychoNN, the baseline
  beside the shipped PtyNet-S): BatchNorm after every conv but the two last, and the standardised linear
  heads of :class:`ptyfast.models.ptynet_s.StandardisedHeads`.
"""

from __future__ import annotations

import torch
from torch import nn

from ptyfast.models.ptynet_s import BoundedHeads, StandardisedHeads


def _block(cin: int, cout: int, norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in ((cin, cout), (cout, cout)):
        layers += [nn.Conv2d(a, b, 3, padding=1)] + ([nn.BatchNorm2d(b)] if norm else []) + [nn.ReLU()]
    return layers


def _decoder(norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for cin, cout in ((128, 128), (128, 64), (64, 64)):
        layers += _block(cin, cout, norm) + [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)]
    layers.append(nn.Conv2d(64, 1, 3, padding=1))
    return nn.Sequential(*layers)


class _PtychoNNLayers(nn.Module):
    """Encoder + amplitude and phase decoders; the decoders' outputs (channel 0 amplitude, 1 phase) go through
    ``heads``. Input (B, 1, 128, 128) preprocessed √I; output amplitude, phase (B, 128, 128)."""

    def __init__(self, norm: bool, heads: nn.Module) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in ((1, 32), (32, 64), (64, 128)):
            layers += _block(cin, cout, norm) + [nn.MaxPool2d(2)]
        self.encoder = nn.Sequential(*layers)
        self.amplitude = _decoder(norm)
        self.phase = _decoder(norm)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return self.heads(torch.cat([self.amplitude(z), self.phase(z)], dim=1))


class PtychoNN(_PtychoNNLayers):
    """The published PtychoNN (sigmoid amplitude, π·tanh phase)."""

    def __init__(self) -> None:
        super().__init__(norm=False, heads=BoundedHeads())


class PtychoNNRecipe(_PtychoNNLayers):
    """PtychoNN with ptyfast's recipe: BatchNorm and standardised linear heads."""

    def __init__(self) -> None:
        super().__init__(norm=True, heads=StandardisedHeads())
