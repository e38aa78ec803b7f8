"""Fine-tuning options, the frame subset and the result record."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ptyfast.choices import Autocast, FinetuneLoss, Fit, Freeze, Objective, Scale
from ptyfast.errors import InputError

__all__ = ["FinetuneOptions", "FinetuneResult", "frame_subset", "select_frames"]



@dataclass
class FinetuneOptions:
    """Fine-tuning options (the CLI flags map 1:1).

    Attributes
    ----------
    epochs : passes over the selected frames (paper: 300 simulated, 400–500 experimental).
    lr : initial learning rate of the network (paper: 1e-4), halved every 20 % of the epochs.
    batch : patterns per optimiser step.
    subset : ``all``, ``half`` (every other frame: a sparser scan, the paper's "fine-tune half") or a
        fraction in (0, 1] (evenly spaced frames).
    freeze : ``none`` (all weights, paper) or ``encoder`` (only the decoder learns).
    loss : ``l1`` on amplitudes (paper) or ``poisson`` negative log-likelihood on intensities.
    objective : ``pattern`` (paper, the default: each pattern against its own predicted patch) or ``overlap`` (each
        pattern against the window of the *stitched* object, so overlapping patches must agree) or
        ``guided`` (the paper's loss plus ``guide_weight`` × the distance of every patch to the window of an
        auxiliary object refined by ``probe_iterations`` rPIE sweeps per epoch, see the module docstring).
    guide_weight : weight of the guide term (``guided``).
    learn_probe : optimise the probe jointly (complex parameter).
    probe_step : γ_P of the rPIE probe update (``learn_probe``), in (0, 1].
    probe_iterations : rPIE passes over the frames per epoch on the auxiliary object (``learn_probe``).
    scale : ``fit`` (learnable per-scan amplitude scale started at the least-squares fit) or ``fixed`` (1).
    scale_lr : learning rate of ``log s``.
    phase_anchor : weight of the per-patch mean-phase anchor (0 = off).
    amp : ``bf16`` autocast for the network (the FFT stays fp32) or ``none``.
    fit : how frames of another size are brought to the model's input size (see ``fit_frames``).
    seed : shuffling seed.
    threads : torch CPU threads (0 = torch's default).
    val_fraction : fraction of the selected frames held out of training to judge the weights by (evenly
        spaced, at least :data:`~ptyfast.finetune.validation.MIN_HELD_OUT`), in [0, 0.5]; 0 turns the
        guard off (the final weights are returned unchecked).
    val_every : epochs between two checks of the held-out data error (also checked before the first epoch
        and after the last).
    patience : checks in a row without a lower held-out error before fine-tuning stops early.
    """

    epochs: int = 300
    lr: float = 1e-4
    batch: int = 16
    subset: str = "all"
    freeze: str = "none"
    loss: str = "l1"
    objective: str = "pattern"
    guide_weight: float = 20.0
    learn_probe: bool = False
    probe_step: float = 1.0
    probe_iterations: int = 5
    scale: str = "fit"
    scale_lr: float = 1e-3
    phase_anchor: float = 1.0
    amp: str = "bf16"
    fit: str = "none"
    seed: int = 0
    threads: int = 0
    val_fraction: float = 0.1
    val_every: int = 5
    patience: int = 10

    def validate(self) -> "FinetuneOptions":
        """Check every field; raise :class:`InputError` naming the first bad one."""
        if self.epochs < 1:
            raise InputError(f"--epochs must be at least 1; found {self.epochs}.")
        self.fit = Fit.check(self.fit, "--fit mode")
        if self.batch < 1:
            raise InputError(f"--batch must be at least 1; found {self.batch}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"--lr must be a positive number; found {self.lr}.")
        if not (0 < self.probe_step <= 1):
            raise InputError(f"--probe-step must be in (0, 1]; found {self.probe_step}.")
        if self.probe_iterations < 1:
            raise InputError(f"--probe-iterations must be at least 1; found {self.probe_iterations}.")
        self.freeze = Freeze.check(self.freeze, "--freeze mode")
        self.loss = FinetuneLoss.check(self.loss, "--loss")
        self.objective = Objective.check(self.objective, "--objective")
        if not (self.guide_weight >= 0 and math.isfinite(self.guide_weight)):
            raise InputError(f"--guide-weight must be a number ≥ 0; found {self.guide_weight}.")
        self.scale = Scale.check(self.scale, "--scale mode")
        self.amp = Autocast.check(self.amp, "--amp mode")
        if self.phase_anchor < 0:
            raise InputError(f"--phase-anchor must be ≥ 0; found {self.phase_anchor}.")
        if not (0 <= self.val_fraction <= 0.5):
            raise InputError(f"--val-fraction must be in [0, 0.5] (0 = no held-out frames); found {self.val_fraction}.")
        if self.val_every < 1:
            raise InputError(f"--val-every must be at least 1 epoch; found {self.val_every}.")
        if self.patience < 1:
            raise InputError(f"--patience must be at least 1 check; found {self.patience}.")
        frame_subset(self.subset)
        return self


def frame_subset(subset: str | float) -> float:
    """The fraction of frames a ``--subset`` value selects: ``all`` → 1, ``half`` → 0.5, or a number in (0, 1]."""
    text = str(subset).strip().lower()
    if text == "all":
        return 1.0
    if text == "half":
        return 0.5
    try:
        f = float(text)
    except ValueError:
        raise InputError(f"--subset must be all, half or a fraction in (0, 1]; found '{subset}'.") from None
    if not (0 < f <= 1):
        raise InputError(f"--subset must be all, half or a fraction in (0, 1]; found '{subset}'.")
    return f


def select_frames(n: int, subset: str | float) -> np.ndarray:
    """Indices of the frames used for fine-tuning: evenly spaced in acquisition order.

    Parameters
    ----------
    n : number of frames in the scan.
    subset : ``all``, ``half`` or a fraction in (0, 1] (see :func:`frame_subset`).

    Returns
    -------
    (M,) int64, sorted, ``M = max(1, round(n · fraction))``.
    """
    f = frame_subset(subset)
    m = max(1, int(round(n * f)))
    return np.unique(np.floor(np.arange(m) * (n / m)).astype(np.int64))


@dataclass
class FinetuneResult:
    """What :func:`finetune` produced.

    Attributes
    ----------
    model : the fine-tuned torch module (eval mode, on the CPU).
    manifest : the updated manifest (``finetuned_on``, ``training["finetune"]``).
    probe : complex64 (H, W) probe in photon units as used at the end (``s·P``; learned with
        ``learn_probe``).
    amplitude_scale : the per-scan scale ``s`` (1 with ``scale="fixed"``).
    frames : indices of the frames fine-tuned on (the held-out ones excluded).
    held_out : indices of the selected frames held out of training (empty with ``val_fraction=0``).
    history : per epoch ``{"epoch", "loss", "r_factor", "lr", "scale", "time_s"}``, plus ``held_out_error``
        (ε) after the epochs where the weights were checked.
    r_factor_before, r_factor_after : ``Σ|√I_pred − √I| / Σ√I`` over the training frames, before and with the
        weights returned.
    held_out_error_before, held_out_error_after : ε of the held-out frames against the reconstruction with the
        starting weights and with the weights returned (NaN without held-out frames).
    kept_epoch : the epoch whose weights were returned (0: the starting weights); ``epochs_run`` : the epochs
        actually run (fewer than asked when stopped early); ``verdict`` : one sentence saying what was kept.
    time_s : wall time of the optimisation loop (seconds).
    before, after : ``reconstruct``'s stitching (phase offsets solved) of every selected frame with the starting
        and the returned weights when ``stitch=True``, else None.
    weight_before, weight_after : their ``Σ|P|²`` weight maps; ``origin`` : the scan position of pixel (0, 0);
    ``positions`` : the frames' windows on that grid; ``pixel_size_m`` : its object pixel (NaN without geometry).
    """

    model: object
    manifest: object
    probe: np.ndarray
    amplitude_scale: float
    frames: np.ndarray
    history: list = field(default_factory=list)
    r_factor_before: float = float("nan")
    r_factor_after: float = float("nan")
    time_s: float = 0.0
    before: np.ndarray | None = None
    after: np.ndarray | None = None
    weight_before: np.ndarray | None = None
    weight_after: np.ndarray | None = None
    origin: tuple[float, float] = (0.0, 0.0)
    positions: np.ndarray | None = None
    options: FinetuneOptions | None = None
    pixel_size_m: float = float("nan")
    held_out: np.ndarray | None = None
    held_out_error_before: float = float("nan")
    held_out_error_after: float = float("nan")
    kept_epoch: int = 0
    epochs_run: int = 0
    verdict: str = ""
    mask: np.ndarray | None = None  # the detector mask the scan was read with (written with the result)
