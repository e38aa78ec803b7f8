"""PtychoNN (Cherukara et al., Appl. Phys. Lett. 117, 044103, 2020): shared conv encoder (32/64/128,
max-pool) and two separate decoders (128/64/64, bilinear ×2 upsampling). Used on 128² inputs for a
like-for-like comparison with PtyNet-S (≈1.25 M parameters). Heads: sigmoid amplitude, π·tanh phase.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU()]


def _decoder() -> nn.Sequential:
    layers: list[nn.Module] = []
    for cin, cout in ((128, 128), (128, 64), (64, 64)):
        layers += _block(cin, cout) + [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)]
    layers.append(nn.Conv2d(64, 1, 3, padding=1))
    return nn.Sequential(*layers)


class PtychoNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in ((1, 32), (32, 64), (64, 128)):
            layers += _block(cin, cout) + [nn.MaxPool2d(2)]
        self.encoder = nn.Sequential(*layers)
        self.amplitude = _decoder()
        self.phase = _decoder()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return torch.sigmoid(self.amplitude(z)[:, 0]), math.pi * torch.tanh(self.phase(z)[:, 0])
