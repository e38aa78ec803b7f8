"""PtychoNet (Guan & Tsai, BMVC 2019), the seed paper's third Table 1 network: a DCGAN-style encoder–decoder.

Encoder: 4×4 convolutions with stride 2 (128² → 8²), LeakyReLU(0.2), BatchNorm after every convolution but
the first (DCGAN's convention). Decoder: 4×4 transposed convolutions with stride 2 (8² → 128²), ReLU and
BatchNorm, ending in two sigmoid channels: amplitude ∈ (0, 1) and phase = π·(2σ − 1) ∈ (−π, π).
Optimiser as in DCGAN and the PtychoNet paper: Adam, lr 2e-4, β₁ = 0.5 (``ADAM_BETAS``; ``train`` uses it).

The channel widths appear only in the paper's figure; these are DCGAN's (64, doubling to 512 in the encoder,
halving back in the decoder): 5,510,850 parameters. The seed paper's Table 1 prints 1,247 k for PtychoNet and
5,512 k for PtychoNN; with these widths PtychoNet has 5,511 k and ptyfast's PtychoNN exactly 1,247 k
(1,247,074), so the two printed counts are swapped, and DCGAN's widths are very likely the paper's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

WIDTHS = (64, 128, 256, 512)


class PtychoNet(nn.Module):
    ADAM_BETAS = (0.5, 0.999)

    def __init__(self) -> None:
        super().__init__()
        enc: list[nn.Module] = []
        cin = 1
        for i, cout in enumerate(WIDTHS):
            enc.append(nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=i == 0))
            if i:
                enc.append(nn.BatchNorm2d(cout))
            enc.append(nn.LeakyReLU(0.2))
            cin = cout
        dec: list[nn.Module] = []
        for cout in WIDTHS[-2::-1]:
            dec += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        dec.append(nn.ConvTranspose2d(cin, 2, 4, stride=2, padding=1))
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.sigmoid(self.decoder(self.encoder(x)))
        return y[:, 0], math.pi * (2.0 * y[:, 1] - 1.0)
