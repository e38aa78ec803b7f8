"""PtyNet-S (Pan et al., "Efficient ptychography reconstruction strategy through fine-tuning of large
pre-trained deep learning model", iScience 2023): a 3-block encoder and a grouped 3-block decoder
without skip connections.

Two variants share the layer table:

- ``ptynet-s-paper`` (:class:`PtyNetSPaper`, 324,452 parameters): the paper's network; heads bounded by
  ptyfast (the reference's Hardtanh let amplitude go negative): amplitude = sigmoid ∈ (0, 1),
  phase = π·tanh ∈ (−π, π) rad.
- ``ptynet-s`` (:class:`PtyNetS`, 325,800 parameters, ptyfast's default): BatchNorm after every conv but
  the last, and *standardised linear heads*: the last layer predicts (value − mean) / std per channel, the
  head de-standardises with buffers set from the training objects' statistics, and clamps to a physical
  range (amplitude ∈ [0, 2], phase ∈ [−π, π]) only in eval mode. Sigmoid/tanh heads and plain convs let the
  optimiser settle on a constant output (see ``docs/training.md``); these do not.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def conv(cin: int, cout: int, stride: int = 1, groups: int = 1, bias: bool = True, act: bool = True,
         norm: bool = False) -> nn.Sequential:
    """3×3 conv, padding 1, optionally BatchNorm, optionally followed by LeakyReLU(0.2)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=bias)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    if act:
        layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


def up(cin: int, cout: int, act: bool = True, norm: bool = False) -> nn.Sequential:
    """4×4 stride-2 transposed conv, padding 1, groups 2 (one group per output)."""
    layers: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, 4, 2, 1, groups=2)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    if act:
        layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class BoundedHeads(nn.Module):
    """Channel 0 → amplitude = sigmoid in (0, 1); channel 1 → phase = π·tanh in (−π, π)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.sigmoid(x[:, 0]), math.pi * torch.tanh(x[:, 1])


AMPLITUDE_MAX = 2.0


class StandardisedHeads(nn.Module):
    """Channel c → mean[c] + std[c]·x (linear); in eval mode amplitude is clamped to [0, 2] and phase to [−π, π].

    Amplitude may exceed 1 (a passive object's bound) because the input is normalised by the scan's probe
    intensity, whose scale an iterative reconstruction leaves uncertain (P·O is what is measured).

    ``mean``/``std`` are buffers (saved with the weights, folded into ONNX exports) set by training from the
    training objects' statistics, so the last layer works on O(1) standardised targets.
    """

    def __init__(self, mean=(2.0 / 3.0, math.pi / 3), std=(0.19, 0.30)) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amp = self.mean[0] + self.std[0] * x[:, 0].float()
        pha = self.mean[1] + self.std[1] * x[:, 1].float()
        if not self.training:
            amp, pha = amp.clamp(0.0, AMPLITUDE_MAX), pha.clamp(-math.pi, math.pi)
        return amp, pha


def _layers(norm: bool, in_channels: int = 1) -> tuple[nn.Sequential, nn.Sequential]:
    encoder = nn.Sequential(
        conv(in_channels, 16, norm=norm), conv(16, 16, stride=2, norm=norm),
        conv(16, 16, norm=norm), conv(16, 32, stride=2, norm=norm),
        conv(32, 64, norm=norm), conv(64, 128, stride=2, norm=norm),
    )
    decoder = nn.Sequential(
        conv(128, 64, norm=norm), conv(64, 64, groups=2, bias=False, norm=norm), up(64, 64, norm=norm),
        conv(64, 64, norm=norm), conv(64, 64, groups=2, bias=False, norm=norm), up(64, 64, norm=norm),
        conv(64, 16, norm=norm), conv(16, 2, groups=2, norm=norm), up(2, 2, act=False),
    )
    return encoder, decoder


class _PtyNetSLayers(nn.Module):
    """The paper's layer table, with or without BatchNorm, and the given output heads."""

    CONDITIONING = ""  # probe conditioning of the input (ptyfast.models.preprocess.CONDITIONING_CHANNELS)

    def __init__(self, norm: bool, heads: nn.Module, in_channels: int = 1) -> None:
        super().__init__()
        self.encoder, self.decoder = _layers(norm=norm, in_channels=in_channels)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.decoder(self.encoder(x)))


class PtyNetSPaper(_PtyNetSLayers):
    """The paper's PtyNet-S. Input (B, 1, 128, 128) preprocessed √I; output amplitude, phase (B, 128, 128)."""

    def __init__(self) -> None:
        super().__init__(norm=False, heads=BoundedHeads())


class PtyNetS(_PtyNetSLayers):
    """ptyfast's default PtyNet-S: the same layers + BatchNorm, standardised linear heads."""

    def __init__(self) -> None:
        super().__init__(norm=True, heads=StandardisedHeads())


class PtyNetSProbe(_PtyNetSLayers):
    """``ptynet-s`` conditioned on the scan's probe: input (B, 3, H, W) = preprocessed √I, Re P, Im P (P scaled
    to max |P| = 1, :func:`ptyfast.models.preprocess.probe_channels`). Only the first conv grows (+288
    weights, +9.4 MFLOP per pattern): one network for a family of probes."""

    CONDITIONING = "probe"

    def __init__(self) -> None:
        super().__init__(norm=True, heads=StandardisedHeads(), in_channels=3)


class PtyNetSProbeEstimate(_PtyNetSLayers):
    """``ptynet-s-probe`` plus one physics step with the scan's probe as two more channels (Re, Im of
    :func:`ptyfast.models.preprocess.estimate_channels`): input (B, 5, H, W)."""

    CONDITIONING = "probe+estimate"

    def __init__(self) -> None:
        super().__init__(norm=True, heads=StandardisedHeads(), in_channels=5)
