"""PtyNet-B (Pan et al. 2023, Figure S6): 4 encoding and 4 decoding stages of residual blocks, a grouped
decoder (one group per output), no skip connections between encoder and decoder. Bounded heads
(sigmoid amplitude, π·tanh phase); the reference code left its outputs unbounded.
"""

from __future__ import annotations

import torch
from torch import nn

from ptyfast.models.ptynet_s import BoundedHeads


class ResBlock(nn.Module):
    """5×5 conv i→i + BN + LeakyReLU, 5×5 conv i→o + BN + LeakyReLU, plus a 1×1 projection shortcut.

    ``grouped``: the second conv and the shortcut use groups = 2 (the first conv mixes both halves),
    as in the reference code.
    """

    def __init__(self, cin: int, cout: int, grouped: bool = False) -> None:
        super().__init__()
        g = 2 if grouped else 1
        self.body = nn.Sequential(
            nn.Conv2d(cin, cin, 5, padding=2), nn.BatchNorm2d(cin), nn.LeakyReLU(0.2),
            nn.Conv2d(cin, cout, 5, padding=2, groups=g), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2),
        )
        self.shortcut = nn.Conv2d(cin, cout, 1, groups=g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class ScaleBlock(nn.Module):
    """5×5 conv + LeakyReLU, 1×1 conv + LeakyReLU, plus a 1×1 projection (no bias), then a 2×2 stride-2
    conv (down) or transposed conv (up, grouped)."""

    def __init__(self, cin: int, cout: int, upsample: bool = False) -> None:
        super().__init__()
        g = 2 if upsample else 1
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 5, padding=2, groups=g), nn.LeakyReLU(0.2),
            nn.Conv2d(cout, cout, 1, groups=g), nn.LeakyReLU(0.2),
        )
        self.shortcut = nn.Conv2d(cin, cout, 1, groups=g, bias=False)
        resample = nn.ConvTranspose2d if upsample else nn.Conv2d
        self.resample = resample(cout, cout, 2, stride=2, groups=g, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resample(self.body(x) + self.shortcut(x))


class PtyNetB(nn.Module):
    """Input (B, 1, 128, 128); bottleneck 256×8²; output amplitude and phase (B, 128, 128)."""

    ENCODER = ((1, 32, 2), (32, 64, 2), (64, 128, 4), (128, 256, 2))
    DECODER = ((256, 128, 2), (128, 64, 4), (64, 32, 2), (32, 2, 2))

    def __init__(self) -> None:
        super().__init__()
        enc: list[nn.Module] = []
        for cin, cout, n in self.ENCODER:
            enc.append(ScaleBlock(cin, cout))
            enc += [ResBlock(cout, cout) for _ in range(n)]
        dec: list[nn.Module] = []
        for cin, cout, n in self.DECODER:
            dec += [ResBlock(cin, cin, grouped=True) for _ in range(n)]
            dec.append(ScaleBlock(cin, cout, upsample=True))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        self.heads = BoundedHeads()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.decoder(self.encoder(x)))
