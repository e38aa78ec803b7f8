"""PtyNet-S (Pan et al., "Efficient ptychography reconstruction strategy through fine-tuning of large
pre-trained deep learning model", iScience 2023): a 3-block encoder and a grouped 3-block decoder
without skip connections, 324,452 parameters.

Heads (ptyfast's bounding; the reference's Hardtanh let amplitude go negative and saturates at high
learning rates): amplitude = sigmoid(a) in (0, 1), phase = π·tanh(φ) in (−π, π) radians. Same parameter count.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def conv(cin: int, cout: int, stride: int = 1, groups: int = 1, bias: bool = True, act: bool = True) -> nn.Sequential:
    """3×3 conv, padding 1, optionally followed by LeakyReLU(0.2)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=bias)]
    if act:
        layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


def up(cin: int, cout: int, act: bool = True) -> nn.Sequential:
    """4×4 stride-2 transposed conv, padding 1, groups 2 (one group per output)."""
    layers: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, 4, 2, 1, groups=2)]
    if act:
        layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class BoundedHeads(nn.Module):
    """Channel 0 → amplitude = sigmoid in (0, 1); channel 1 → phase = π·tanh in (−π, π)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.sigmoid(x[:, 0]), math.pi * torch.tanh(x[:, 1])


class PtyNetS(nn.Module):
    """Input (B, 1, 128, 128) normalised √I; output amplitude (B, 128, 128), phase (B, 128, 128)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            conv(1, 16), conv(16, 16, stride=2),
            conv(16, 16), conv(16, 32, stride=2),
            conv(32, 64), conv(64, 128, stride=2),
        )
        self.decoder = nn.Sequential(
            conv(128, 64), conv(64, 64, groups=2, bias=False), up(64, 64),
            conv(64, 64), conv(64, 64, groups=2, bias=False), up(64, 64),
            conv(64, 16), conv(16, 2, groups=2), up(2, 2, act=False),
        )
        self.heads = BoundedHeads()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.decoder(self.encoder(x)))
