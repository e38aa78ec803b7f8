"""The options of :func:`ptyfast.training.train.train` (``ptyfast train``'s flags, one to one)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ptyfast.choices import Autocast, Schedule, Simulator, TrainLoss
from ptyfast.errors import InputError
from ptyfast.models import get_entry
from ptyfast.training.data import DataOptions

__all__ = ["TrainOptions"]


@dataclass
class TrainOptions:
    """Training options (CLI flags map 1:1).

    Attributes
    ----------
    model : registered architecture name.
    steps : optimiser steps in total (a resumed run continues to this number).
    batch : patterns per step per process.
    lr, lr_min : peak and floor learning rate.
    schedule : ``cyclic`` (paper: triangular2, half-cycle ``cycle_steps``) or ``onecycle`` (warm-up + cosine).
    amp : ``bf16`` (autocast; ≈2.5× faster on AVX-512 BF16 CPUs) or ``none``.
    val_every, val_size : validation cadence (steps) and fixed validation-set size.
    val_fraction : share of the images held out for validation (the last ones in sorted order).
    init_bias : start the output heads at the training objects' mean amplitude and phase.
    loss : ``lit`` (ptyfast, in-probe, see :mod:`ptyfast.training.loss`) or ``mse`` (paper, full window).
    phase_mean_weight : weight of each patch's mean phase error in the ``lit`` loss.
    phase_weight : weight of the phase channel against the amplitude's in the ``lit`` loss.
    warmup : fraction of the steps spent warming up (``onecycle``).
    val_seed : seed of the fixed validation set (default ``seed``); keep it fixed across stages continued
        with ``init_from`` so their curves compare.
    init_from : start from the weights of this checkpoint (same architecture) with a fresh optimiser and
        schedule: continue a run under a new schedule, or adapt a model to a new probe.
    ema : decay of an exponential moving average of the weights (and BatchNorm statistics), 0 = off. With it,
        validation and ``best.pt`` use the averaged weights: less step-to-step noise, and less over-fitting on
        small labelled sets.
    simulate : where the training patterns are simulated: ``auto`` (torch on the training device when it is
        a GPU, numpy on a CPU, where it is faster: ``benchmarks/simulator_speed.py``), ``numpy`` or ``torch``.
    """

    model: str = "ptynet-s"
    steps: int = 2000
    batch: int = 32
    lr: float = 1e-3
    lr_min: float = 1e-5
    schedule: str = "onecycle"
    cycle_steps: int = 1000
    amp: str = "bf16"
    channels_last: bool = True
    clip: float = 1.0
    val_every: int = 200
    val_size: int = 256
    val_fraction: float = 0.1
    seed: int = 0
    threads: int = 0
    init_bias: bool = True
    loss: str = "lit"
    phase_mean_weight: float = 0.1
    phase_weight: float = 1.0
    warmup: float = 0.02
    init_from: str = ""
    val_seed: int | None = None
    ema: float = 0.0
    simulate: str = "auto"
    data: DataOptions = field(default_factory=DataOptions)

    def validate(self) -> "TrainOptions":
        """Raise :class:`InputError` (one sentence, named as the CLI option) on an unusable setting."""
        get_entry(self.model)  # an unknown architecture names the registered ones
        self.loss = TrainLoss.check(self.loss, "loss")
        self.schedule = Schedule.check(self.schedule, "schedule")
        self.amp = Autocast.check(self.amp, "--amp mode")
        self.simulate = Simulator.check(self.simulate, "--simulate choice")
        if not 0.0 <= self.ema < 1.0:
            raise InputError(f"--ema must be in [0, 1) (0 = off); found {self.ema}.")
        self.data.validate()
        return self
