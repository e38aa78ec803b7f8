"""Physics fine-tuning of a pre-trained network on one scan, without ground truth (Pan et al. 2023, STAR
Methods "Fine-tuning method"), plus joint probe learning (the paper's stated future work).

Method
------
For every pattern ``I_n`` of the scan the network predicts an object patch ``O_n = A_n·exp(iφ_n)`` from the
preprocessed input (√I / max √I), the exit wave ``P·O_n`` is propagated with the project's forward model
(:mod:`ptyfast.finetune.torch_forward`, ``Ψ = fftshift(fft2(·, norm="ortho"))``) and the loss compares
predicted and measured amplitudes:

* ``l1`` (paper): ``mean_valid |s·|Ψ_n| − √I_n| / mean_valid √I`` — an R-factor-like, dimensionless loss;
* ``poisson``: the Poisson negative log-likelihood ``mean_valid (λ − I·log λ) / mean_valid I`` with
  ``λ = s²·|Ψ_n|²``, the right likelihood for photon counts at low flux.

Adam, learning rate 1e-4 halved every 20 % of the epochs (the paper's stepped schedule). Masked detector
pixels (``scan.mask`` False) are left out of the loss and of the R-factor.

Ambiguities the per-pattern loss cannot resolve, and what ptyfast does about them
---------------------------------------------------------------------------------
* **Absolute scale.** The network input is normalised per pattern, so it never sees the photon count;
  the amplitude it predicts is the training prior's transmission. The predicted intensity scales as
  ``|P|²·|O|²``, so a probe whose power is off (a converted file, a detector gain, a guessed probe) would
  force the object amplitude to absorb the error — or saturate the sigmoid head. A per-scan scalar
  ``s`` (learnable, as ``log s``) multiplies the predicted amplitudes; with ``scale="fit"`` (default) it
  starts at the least-squares fit of the pre-trained predictions to the data and is learned with the
  network; ``scale="fixed"`` keeps ``s = 1`` for probes known in absolute photons (simulations), which then
  also pins the object's absolute amplitude. ``s`` is a property of the illumination: it is reported and
  stored (``training.finetune.amplitude_scale``), and folded into the probe written by ``--learn-probe``.
* **Global phase.** ``|far_field(P·O·e^{ic})| = |far_field(P·O)|``: each pattern constrains only the
  relative phases inside its own patch, so the loss has no gradient along each patch's mean phase and the
  optimiser noise would let the patches' phase offsets wander apart (visible as tiles in the stitched
  phase). A small anchor term ``phase_anchor · mean_n (φ̄_n − φ̄_n⁰)²`` keeps each patch's
  ``|P|²``-weighted mean phase at the pre-trained network's value ``φ̄_n⁰``. It acts (to first order) only
  along the unconstrained direction, so it does not fight the data.
* **Probe ↔ object** (``--learn-probe``): a per-pattern loss cannot separate ``P`` from ``O_n`` (any
  ``P'`` with ``O'_n = P·O_n/P'`` fits every pattern): the probe is only identifiable through the overlap,
  i.e. through *one* object explaining all patterns. So the probe is not learned through the per-patch
  loss. ptyfast keeps an auxiliary object on the scan grid, started from the pre-trained network's
  stitched prediction, and after every epoch runs ``probe_iterations`` rPIE passes
  (:func:`ptyfast.refine.engines.refine`, object and probe updated) on it; the network is then fine-tuned
  with the updated probe (its gradient w.r.t. the probe is not used). The remaining ambiguities of
  ptychography (global complex factor, a linear phase ramp and a translation shared by ``P`` and ``O``)
  stay: probe errors are reported after removing the best global complex factor only.

Objectives (``--objective``)
----------------------------
* ``pattern`` (the paper): each pattern against its own predicted patch. Every pattern is a separate
  phase-retrieval problem; with the paper's probe (nearly flat, filling the 128² window: no oversampling)
  a single pattern does not determine its patch, so the loss can fall while the object does not improve.
* ``overlap``: each pattern against the window of the *stitched* object (``|P|²``-weighted, bilinear, what
  ``reconstruct`` writes; :mod:`ptyfast.finetune.torch_stitch`): overlapping patches must agree, as in
  ptychography. The batch's live patches replace their cached copies in the stitched object, so a step
  costs O(batch).
* ``guided``: the paper's loss plus ``guide_weight ·‖O_n − W_n(Ô)‖² / ‖W_n(Ô)‖²``, where ``Ô`` is an
  auxiliary object started from the network's stitched prediction and advanced by ``probe_iterations``
  rPIE sweeps per epoch (:func:`ptyfast.refine.engines.refine`, measured data and known probe only) and
  ``W_n`` its window at frame ``n``. The network learns the overlap-consistent solution and keeps it:
  the fine-tuned network then reconstructs further scans of the sample at network speed.

Batch normalisation
-------------------
The whole network is kept in ``eval()`` mode while its weights are updated: batch-norm layers (PtyNet-B)
normalise with their frozen pre-training running statistics and never update them, so a fine-tuning
batch of a few correlated patterns of one sample cannot corrupt them (the reference code trained in
``train()`` mode and let them drift). BN's affine weights are trained like any other weight unless frozen.
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ptyfast.errors import InputError
from ptyfast.io.atomic import atomic_path, save_figure
from ptyfast.scan import object_grid

__all__ = [
    "FinetuneOptions", "FinetuneResult", "select_frames", "resolve_probe", "finetune", "save_finetuned",
    "finetune_file", "probe_error", "predict_object", "frame_subset", "save_probe", "save_preview",
]

SUBSETS = ("all", "half")
FREEZE = ("none", "encoder")
LOSSES = ("l1", "poisson")
OBJECTIVES = ("pattern", "overlap", "guided")
SCALES = ("fit", "fixed")


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
    objective : ``pattern`` (paper: each pattern against its own predicted patch) or ``overlap`` (each
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

    def validate(self) -> "FinetuneOptions":
        """Check every field; raise :class:`InputError` naming the first bad one."""
        if self.epochs < 1:
            raise InputError(f"--epochs must be at least 1; found {self.epochs}.")
        if self.fit not in ("none", "crop", "bin", "pad"):
            raise InputError(f"--fit must be none, crop, bin or pad; found '{self.fit}'.")
        if self.batch < 1:
            raise InputError(f"--batch must be at least 1; found {self.batch}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"--lr must be a positive number; found {self.lr}.")
        if not (0 < self.probe_step <= 1):
            raise InputError(f"--probe-step must be in (0, 1]; found {self.probe_step}.")
        if self.probe_iterations < 1:
            raise InputError(f"--probe-iterations must be at least 1; found {self.probe_iterations}.")
        if self.freeze not in FREEZE:
            raise InputError(f"--freeze must be one of {', '.join(FREEZE)}; found '{self.freeze}'.")
        if self.loss not in LOSSES:
            raise InputError(f"--loss must be one of {', '.join(LOSSES)}; found '{self.loss}'.")
        if self.objective not in OBJECTIVES:
            raise InputError(f"--objective must be one of {', '.join(OBJECTIVES)}; found '{self.objective}'.")
        if not (self.guide_weight >= 0 and math.isfinite(self.guide_weight)):
            raise InputError(f"--guide-weight must be a number ≥ 0; found {self.guide_weight}.")
        if self.scale not in SCALES:
            raise InputError(f"--scale must be one of {', '.join(SCALES)}; found '{self.scale}'.")
        if self.amp not in ("bf16", "none"):
            raise InputError(f"--amp must be bf16 or none; found '{self.amp}'.")
        if self.phase_anchor < 0:
            raise InputError(f"--phase-anchor must be ≥ 0; found {self.phase_anchor}.")
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


def resolve_probe(scan, probe: str | os.PathLike | np.ndarray | None, *, source: str = "the scan") -> np.ndarray:
    """The probe to fine-tune with: an array, a file (``.npy``/CXI), ``"fresnel"`` (a simulated focused
    probe, normalised to the scan's mean photons per frame) or ``None`` (the scan's own probe).

    Raises
    ------
    InputError
        No probe anywhere, an unreadable file, or a probe whose shape differs from the frames.
    """
    from ptyfast.io.convert import load_probe
    from ptyfast.physics.probe import fresnel_probe

    shape = scan.frame_shape
    if probe is None:
        if scan.probe is None:
            raise InputError(
                f"{source} carries no probe; pass --probe FILE (.npy or CXI) or --probe fresnel for a simulated "
                "guess (best with --learn-probe)."
            )
        p = np.asarray(scan.probe)
        where = source
    elif isinstance(probe, np.ndarray):
        p, where = probe, "the given probe"
    elif str(probe).lower() == "fresnel":
        photons = float(np.mean(scan.frames(0, min(scan.n_frames, 64)).sum(axis=(1, 2))))
        geo = scan.geometry
        pixel = geo.object_pixel_size(shape[0]) if not scan.meta.get("geometry_defaulted") else 1e-6 / shape[0]
        try:
            p = fresnel_probe(shape, wavelength=geo.wavelength, pixel_size=pixel, photons=max(photons, 1.0))
        except InputError:
            p = fresnel_probe(shape, pixel_size=1e-6 / shape[0], photons=max(photons, 1.0))
        where = "the Fresnel guess"
    else:
        p = load_probe(probe)
        where = f"probe file {probe}"
    p = np.asarray(p)
    if p.ndim != 2 or tuple(p.shape) != tuple(shape):
        raise InputError(
            f"{where} has shape {tuple(p.shape)} but the diffraction frames are {tuple(shape)}; "
            "give a probe of the frames' size."
        )
    if not np.all(np.isfinite(p)) or not np.any(p):
        raise InputError(f"{where} is all zeros or contains NaN/Inf.")
    return p.astype(np.complex64)


def probe_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Relative probe error after removing the global complex factor (phase and scale ambiguity):
    ``min_c ‖c·P_est − P_true‖ / ‖P_true‖``, ``c = ⟨P_est, P_true⟩ / ‖P_est‖²``."""
    e = np.asarray(estimate, np.complex128).ravel()
    t = np.asarray(truth, np.complex128).ravel()
    c = np.vdot(e, t) / max(np.vdot(e, e).real, 1e-300)
    return float(np.linalg.norm(c * e - t) / max(np.linalg.norm(t), 1e-300))


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
    frames : indices of the frames fine-tuned on.
    history : per epoch ``{"epoch", "loss", "r_factor", "lr", "scale", "time_s"}``.
    r_factor_before, r_factor_after : ``Σ|√I_pred − √I| / Σ√I`` over the frames, before and after.
    time_s : wall time of the optimisation loop (seconds).
    before, after : stitched complex objects (from the frames used) when ``stitch=True``, else None.
    weight_before, weight_after : their ``Σ|P|²`` weight maps; ``origin`` : the scan position of pixel (0, 0);
    ``positions`` : the frames' windows on that grid.
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


def _load_frames(scan, idx: np.ndarray, manifest, fit: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Selected frames (float32, fitted to the model's input size) and the fitted mask (or None)."""
    from ptyfast.models.preprocess import fit_frames, fit_mask

    size = tuple(manifest.input_size)
    frames = np.concatenate([fit_frames(fr, size, fit) for _, fr in scan.select(np.asarray(idx)).iter_chunks(256)])
    mask = None
    if scan.mask is not None:
        mask = fit_mask(scan.mask, size, fit)
    return frames, mask


def _set_trainable(model, freeze: str) -> list:
    for p in model.parameters():
        p.requires_grad_(True)
    if freeze == "encoder":
        enc = getattr(model, "encoder", None)
        if enc is None:
            raise InputError(f"--freeze encoder: the '{type(model).__name__}' network has no encoder block.")
        for p in enc.parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError("nothing left to fine-tune: every weight is frozen.")
    return params


def predict_object(model, x: np.ndarray, positions: np.ndarray, probe: np.ndarray, object_shape,
                   *, batch: int = 64, amp: str = "bf16", device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """Predict every patch and stitch them with ``|P|²`` weights (:func:`ptyfast.kernels.stitch` semantics).

    Parameters
    ----------
    model : torch module (used in eval mode, no gradients).
    x : (N, 1, H, W) float32 preprocessed patterns.
    positions : (N, 2) (y, x) positions on the object grid (≥ 0).
    probe : (H, W) complex probe (only ``|P|²`` is used, as the stitching weight).
    object_shape : (rows, cols).

    Returns
    -------
    object : complex64 (rows, cols); weight_map : float32 (rows, cols).
    """
    import torch

    from ptyfast.kernels import normalise, overlap_add

    w = (np.abs(probe) ** 2).astype(np.float32)
    num = np.zeros(tuple(object_shape), np.complex64)
    wmap = np.zeros(tuple(object_shape), np.float32)
    was = model.training
    model.eval()
    dev = torch.device(device)
    with torch.no_grad():
        for s in range(0, len(x), batch):
            xb = torch.from_numpy(np.ascontiguousarray(x[s : s + batch])).to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
                a, ph = model(xb)
            patches = torch.polar(a.float(), ph.float()).cpu().numpy().astype(np.complex64)
            overlap_add(num, patches, positions[s : s + batch], weights=w, weight_accum=wmap)
    model.train(was)
    return normalise(num, wmap), wmap


def finetune(
    scan,
    model,
    manifest,
    probe: np.ndarray,
    options: FinetuneOptions | None = None,
    *,
    source: str = "",
    stitch: bool = False,
    device="cpu",
    progress: Callable[[int, dict], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` on ``scan`` through the forward model (see the module docstring).

    Parameters
    ----------
    scan : ptyfast.scan.Scan
        Far-field scan; ``mask`` is respected; ``probe`` is not read (pass ``probe``).
    model : torch.nn.Module
        Pre-trained network (modified in place and returned).
    manifest : ptyfast.models.Manifest
        The network's manifest (input size, preprocessing).
    probe : complex (H, W) ndarray
        Probe in √photons, shape = the model's input size.
    options : FinetuneOptions
    source : str
        Name of the scan (file) for the manifest's ``finetuned_on``.
    stitch : bool
        Also return the stitched objects before and after (from the selected frames).
    device : str or torch.device
        Where to run (CPU by default).
    progress : callable(epoch, info) or None
        Called after every epoch with ``loss``, ``r_factor``, ``lr``, ``scale``, ``time_s``.

    Returns
    -------
    FinetuneResult
    """
    import torch

    from ptyfast import __version__
    from ptyfast.finetune import torch_forward
    from ptyfast.models.manifest import probe_hash
    from ptyfast.models.preprocess import fit_positions, preprocess

    o = (options or FinetuneOptions()).validate()
    if getattr(scan, "near_field", False):
        raise InputError(f"{source or 'the scan'} is near-field data; fine-tuning uses the far-field model only.")
    size = tuple(manifest.input_size)
    probe = np.asarray(probe, np.complex64)
    if tuple(probe.shape) != size:
        raise InputError(
            f"the probe has shape {tuple(probe.shape)} but the model expects {size} patterns; give a probe of that size."
        )
    if o.threads:
        torch.set_num_threads(o.threads)
    dev = torch.device(device)
    idx = select_frames(scan.n_frames, o.subset)
    frames, mask = _load_frames(scan, idx, manifest, o.fit)
    x_np = preprocess(frames, manifest, probe_power=float(np.sum(np.abs(probe) ** 2)), mask=mask)
    meas_np = np.sqrt(np.maximum(frames, 0.0)).astype(np.float32)
    n = len(idx)
    positions = fit_positions(scan.positions, scan.frame_shape[0], size, o.fit)
    corner, obj_shape = object_grid(positions, size)
    pos = positions[idx] - corner

    x_all = torch.from_numpy(x_np)
    meas_all = torch.from_numpy(meas_np)
    mask_t = torch.from_numpy(mask.astype(np.float32)).to(dev) if mask is not None else None
    valid = float(mask.sum()) if mask is not None else float(size[0] * size[1])
    norm_amp = float((meas_np * (mask if mask is not None else 1.0)).sum()) / (n * valid) + 1e-12
    norm_int = float(((meas_np**2) * (mask if mask is not None else 1.0)).sum()) / (n * valid) + 1e-12

    model = model.to(dev)
    model.eval()  # BN uses (and keeps) its pre-training running statistics; see the module docstring
    channels_last = dev.type == "cpu"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net_params = _set_trainable(model, o.freeze)
    autocast = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=o.amp == "bf16")

    probe0 = torch.from_numpy(probe).to(dev)
    weight = (probe0.abs() ** 2)
    weight = weight / weight.sum()
    probe_t = probe0.clone()  # updated in place by the probe step when learning the probe

    def current_probe() -> torch.Tensor:
        return probe_t

    def net(xb: torch.Tensor):
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(**autocast):
            a, ph = model(xb)
        return a.float(), ph.float()

    def mean_phase(ph: torch.Tensor) -> torch.Tensor:
        return (ph * weight).sum(dim=(-2, -1))

    # Pass 0: pre-trained predictions → R-factor before, the scale fit, the phase anchors, the "before" object.
    eval_batch = max(o.batch, 32)
    anchors = torch.empty(n)
    pred0 = torch.empty(meas_all.shape)
    before = None
    from ptyfast.kernels import normalise, overlap_add

    guided = o.objective == "guided"
    need_object = stitch or o.learn_probe or guided
    if need_object:
        stitch_num = np.zeros(obj_shape, np.complex64)
        stitch_w = np.zeros(obj_shape, np.float32)
    wnp = (np.abs(probe) ** 2).astype(np.float32)
    overlap = o.objective == "overlap"
    if overlap:  # every patch's current prediction, and the stitched object's numerator built from them
        from ptyfast.finetune.torch_stitch import Footprints

        footprints = Footprints(pos, size, obj_shape, device=dev)
        cache = torch.empty((n, *size), dtype=torch.complex64, device=dev)
        w_t = torch.from_numpy(wnp).to(dev)
        every = torch.arange(n, device=dev)
        wsum = torch.zeros(obj_shape[0] * obj_shape[1], device=dev)
        for s in range(0, n, eval_batch):
            ib = every[s : s + eval_batch]
            wsum = footprints.add(wsum, w_t.expand(len(ib), *size), ib)
        from ptyfast.kernels.numpy_twins import STITCH_FLOOR

        den = torch.clamp(wsum, min=max(STITCH_FLOOR * float(wsum.max()), 1e-30))

        def restitch() -> torch.Tensor:
            """Numerator Σ w·patch of the stitched object from every cached patch (flat, complex64)."""
            acc = torch.zeros(obj_shape[0] * obj_shape[1], dtype=torch.complex64, device=dev)
            for s in range(0, n, eval_batch):
                acc = footprints.add(acc, w_t * cache[s : s + eval_batch], every[s : s + eval_batch])
            return acc

        def seen_through(num: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
            """Far-field amplitudes of the stitched object's windows ``ib`` lit by the current probe."""
            psi = torch_forward.far_field(current_probe()[None] * footprints.gather(num / den, ib))
            return torch.sqrt(psi.real**2 + psi.imag**2 + 1e-12)
    with torch.no_grad():
        for s in range(0, n, eval_batch):
            a, ph = net(x_all[s : s + eval_batch].to(dev))
            anchors[s : s + len(a)] = mean_phase(ph).cpu()
            pred0[s : s + len(a)] = torch_forward.predicted_amplitude(current_probe(), a, ph).cpu()
            if overlap:
                cache[s : s + len(a)] = torch.polar(a, ph)
            if need_object:
                patches = torch.polar(a, ph).cpu().numpy().astype(np.complex64)
                overlap_add(stitch_num, patches, pos[s : s + eval_batch], weights=wnp, weight_accum=stitch_w)
        if overlap:  # the data as seen through the stitched object (what the objective compares)
            num = restitch()
            for s in range(0, n, eval_batch):
                pred0[s : s + eval_batch] = seen_through(num, every[s : s + eval_batch]).cpu()
        m0 = torch.from_numpy(mask.astype(np.float32)) if mask is not None else torch.ones(size)
        den_aa = float((pred0 * pred0 * m0).sum())
        s_fit = float((pred0 * meas_all * m0).sum()) / den_aa if den_aa > 0 else float("nan")
    weight_before = consensus = None
    if need_object:
        consensus = normalise(stitch_num, stitch_w)
    if stitch:
        before, weight_before = consensus, stitch_w
    s0 = s_fit if o.scale == "fit" else 1.0
    if not (np.isfinite(s0) and s0 > 0):
        raise InputError(
            f"the pre-trained predictions of {source or 'the scan'} do not fit its data at any positive scale; "
            "check the probe and the frames."
        )
    with torch.no_grad():
        rn, rd = torch_forward.r_factor(s0 * pred0, meas_all, m0)
        r_before = float(rn) / max(float(rd), 1e-30)
    del pred0
    # guided: the rPIE object's amplitude is relative to s·P, so a learnable s would feed back through the
    # guide (s up → object down → patches down → s up): keep s at its fit.
    learn_scale = o.scale == "fit" and not o.learn_probe and not guided
    if o.learn_probe:  # the probe's own power carries the scale: fold the fit into it, keep s = 1
        probe_t.mul_(s0)
        s0 = 1.0
    log_scale = torch.nn.Parameter(torch.tensor(math.log(s0), device=dev), requires_grad=learn_scale)
    anchors = anchors.to(dev)
    if o.learn_probe or guided:
        from ptyfast.kernels import gather
        from ptyfast.refine.engines import refine
        from ptyfast.scan import Scan

        probe_scan = Scan(diffraction=frames, positions=pos, probe=current_probe().cpu().numpy(), mask=mask)

    groups = [{"params": net_params, "lr": o.lr}]
    if learn_scale:
        groups.append({"params": [log_scale], "lr": o.scale_lr})
    opt = torch.optim.Adam(groups)
    step = max(1, int(round(0.2 * o.epochs)))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=0.5)

    def losses(pred: torch.Tensor, mb: torch.Tensor, a: torch.Tensor, ph: torch.Tensor,
               ib: torch.Tensor) -> torch.Tensor:
        m = mask_t if mask_t is not None else None
        if o.loss == "l1":
            d = (pred - mb).abs()
            d = d * m if m is not None else d
            data = d.sum() / (len(pred) * valid) / norm_amp
        else:
            lam = pred * pred + 1e-6 * norm_int
            nll = lam - (mb * mb) * torch.log(lam)
            nll = nll * m if m is not None else nll
            data = nll.sum() / (len(pred) * valid) / norm_int
        if guided:  # relative squared distance to the rPIE-refined object's windows
            t = targets[ib]
            data = data + o.guide_weight * (torch.polar(a, ph) - t).abs().square().mean() / t.abs().square().mean()
        if o.phase_anchor > 0 and ph is not None:
            drift = mean_phase(ph) - anchors[ib]
            # overlap: the data fix every patch's phase relative to its neighbours; only the global offset is free
            data = data + o.phase_anchor * (drift.mean() ** 2 if overlap else (drift**2).mean())
        return data

    gen = torch.Generator().manual_seed(o.seed)
    history: list[dict] = []
    t0 = time.perf_counter()
    for epoch in range(1, o.epochs + 1):
        if o.learn_probe or guided:  # rPIE sweeps on the auxiliary object (+ probe) before the network's pass
            with torch.no_grad():
                probe_run = refine(probe_scan, init=consensus, iterations=o.probe_iterations, update_probe=o.learn_probe,
                            probe=(torch.exp(log_scale) * current_probe()).cpu().numpy(),
                            batch=o.batch if o.batch > 1 else None,
                            probe_step=o.probe_step, rescale_probe=False, seed=epoch)
                if not probe_run.diverged:
                    consensus = probe_run.object
                    if o.learn_probe:  # the network sees the new probe (s = 1 when learning the probe)
                        probe_t.copy_(torch.from_numpy(np.asarray(probe_run.probe, np.complex64)).to(dev))
                if guided:
                    targets = torch.from_numpy(gather(consensus.astype(np.complex64), pos, size)).to(dev)
        order = torch.randperm(n, generator=gen)
        tot = 0.0
        rnum = rden = 0.0
        for s in range(0, n, o.batch):
            ib = order[s : s + o.batch]
            xb, mb = x_all[ib].to(dev), meas_all[ib].to(dev)
            a, ph = net(xb)
            if overlap:  # this batch's live patches replace their cached copies in the stitched object
                ib_d = ib.to(dev)
                live = torch.polar(a, ph)
                pred = torch.exp(log_scale) * seen_through(footprints.add(num, w_t * (live - cache[ib_d]), ib_d), ib_d)
            else:
                pred = torch.exp(log_scale) * torch_forward.predicted_amplitude(current_probe(), a, ph, eps=1e-12)
            loss = losses(pred, mb, a, ph, ib.to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if overlap:
                with torch.no_grad():
                    fresh = live.detach()
                    num = footprints.add(num, w_t * (fresh - cache[ib_d]), ib_d)
                    cache[ib_d] = fresh
            tot += float(loss.detach()) * len(ib)
            with torch.no_grad():
                rn, rd = torch_forward.r_factor(pred.detach(), mb, mask_t)
                rnum, rden = rnum + float(rn), rden + float(rd)
        sched.step()
        info = {"epoch": epoch, "loss": tot / n, "r_factor": rnum / max(rden, 1e-30),
                "lr": opt.param_groups[0]["lr"], "scale": float(torch.exp(log_scale.detach())),
                "time_s": time.perf_counter() - t0}
        history.append(info)
        if progress is not None:
            progress(epoch, info)
    elapsed = time.perf_counter() - t0

    # Final pass: R-factor after (and the "after" object) with the final weights.
    scale = float(torch.exp(log_scale).detach())
    rnum = rden = 0.0
    if stitch:
        stitch_num = np.zeros(obj_shape, np.complex64)
        stitch_w = np.zeros(obj_shape, np.float32)
        wnp = (np.abs(current_probe().detach().cpu().numpy()) ** 2).astype(np.float32)
    with torch.no_grad():
        for s in range(0, n, eval_batch):
            xb = x_all[s : s + eval_batch].to(dev)
            mb = meas_all[s : s + eval_batch].to(dev)
            a, ph = net(xb)
            if overlap:  # R-factor through the stitched object, below
                cache[s : s + len(a)] = torch.polar(a, ph)
            else:
                pred = scale * torch_forward.predicted_amplitude(current_probe(), a, ph)
                rn, rd = torch_forward.r_factor(pred, mb, mask_t)
                rnum, rden = rnum + float(rn), rden + float(rd)
            if stitch:
                patches = torch.polar(a, ph).cpu().numpy().astype(np.complex64)
                overlap_add(stitch_num, patches, pos[s : s + eval_batch], weights=wnp, weight_accum=stitch_w)
        if overlap:
            num = restitch()
            for s in range(0, n, eval_batch):
                pred = scale * seen_through(num, every[s : s + eval_batch])
                rn, rd = torch_forward.r_factor(pred, meas_all[s : s + eval_batch].to(dev), mask_t)
                rnum, rden = rnum + float(rn), rden + float(rd)
    after = normalise(stitch_num, stitch_w) if stitch else None
    weight_after = stitch_w if stitch else None
    r_after = rnum / max(rden, 1e-30)

    # Back to a plain fp32, contiguous, CPU, eval-mode module (exportable like any other).
    model = model.to("cpu").to(memory_format=torch.contiguous_format).float().eval()
    for p in model.parameters():
        p.requires_grad_(True)
    final_probe = (scale * current_probe().cpu().numpy()).astype(np.complex64)

    summary = {
        "scan": source, "frames": int(n), "frames_total": int(scan.n_frames), "subset": str(o.subset),
        "epochs": o.epochs, "batch": o.batch, "lr": o.lr, "schedule": f"StepLR(step={step} epochs, gamma=0.5)",
        "loss": o.loss, "objective": o.objective, "guide_weight": o.guide_weight if guided else None,
        "freeze": o.freeze, "learn_probe": o.learn_probe, "scale_mode": o.scale,
        "amplitude_scale": scale, "amplitude_scale_fit": float(s_fit), "phase_anchor": o.phase_anchor,
        "r_factor_before": float(r_before), "r_factor_after": float(r_after), "time_s": round(elapsed, 2),
        "amp": o.amp, "batch_norm": "eval mode, running statistics frozen",
        "hardware": f"{platform.machine()} {os.cpu_count()} cores"
        + (f", {torch.cuda.get_device_name()}" if dev.type == "cuda" else ""),
        "torch": torch.__version__,
    }
    new_manifest = replace(
        manifest,
        finetuned_on=f"{Path(source).name if source else 'scan'}: {n} of {scan.n_frames} frames, {o.epochs} epochs",
        training={**(manifest.training or {}), "finetune": summary},
        ptyfast_version=__version__,
    )
    if o.learn_probe:
        new_manifest = replace(new_manifest, probe_sha256=probe_hash(final_probe),
                               probe_photons=float(np.sum(np.abs(final_probe) ** 2)))
    return FinetuneResult(model=model, manifest=new_manifest, probe=final_probe, amplitude_scale=scale,
                          frames=idx, history=history, r_factor_before=float(r_before),
                          r_factor_after=float(r_after), time_s=elapsed, before=before, after=after,
                          weight_before=weight_before, weight_after=weight_after,
                          origin=tuple(float(v) for v in corner), positions=pos, options=o)


# ------------------------------------------------------------------------------------------------ output
def _save_png(path: Path, panels: list[tuple], title: str = "") -> None:
    """Side-by-side images ``(title, array, colormap[, (vmin, vmax)])`` as one PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (name, img, cmap, *limits) in zip(axes[0], panels):
        vmin, vmax = limits[0] if limits else (None, None)
        im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(name)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def save_probe(directory: Path, probe: np.ndarray, *, stem: str = "probe") -> list[Path]:
    """Write ``probe.npy`` (complex64) and ``probe.png`` (amplitude and phase) into ``directory``."""
    directory = Path(directory)
    npy = directory / f"{stem}.npy"
    with atomic_path(npy) as tmp, open(tmp, "wb") as fh:  # np.save(name) would append ".npy" to the name
        np.save(fh, np.asarray(probe, np.complex64))
    png = directory / f"{stem}.png"
    _save_png(png, [("|P|", np.abs(probe), "gray"), ("arg P (rad)", np.angle(probe), "twilight")],
              title=f"probe, Σ|P|² = {float(np.sum(np.abs(probe) ** 2)):.4g}")
    return [npy, png]


def save_preview(path: Path, before: np.ndarray, after: np.ndarray, weight_mask: np.ndarray | None = None) -> Path:
    """PNG of the stitched phase and amplitude before and after fine-tuning (mean phase removed; grey levels
    clipped to the 1–99 % percentiles of the covered region, shared by before and after)."""
    sel = weight_mask if weight_mask is not None else (np.abs(before) > 0) & (np.abs(after) > 0)
    if not np.any(sel):
        sel = np.ones(before.shape, bool)
    imgs = {}
    for name, obj in (("before", before), ("after", after)):
        ph = np.angle(obj * np.exp(-1j * np.angle(np.sum(obj[sel]))))
        imgs[name] = (np.where(sel, ph, np.nan), np.where(sel, np.abs(obj), np.nan))
    panels = []
    for k, label in ((0, "phase (rad)"), (1, "amplitude")):
        vals = np.concatenate([imgs[n][k][sel] for n in imgs])
        lo, hi = np.percentile(vals, [1, 99])
        for name in ("before", "after"):
            panels.append((f"{label} {name}", np.clip(imgs[name][k], lo, hi), "gray", (lo, hi)))
    _save_png(Path(path), panels)
    return Path(path)


def save_finetuned(out_dir: str | os.PathLike, result: FinetuneResult, *, name: str = "finetuned",
                   preview: bool = True) -> dict[str, Path]:
    """Write a fine-tuned model atomically: ``<name>.pt`` + ``<name>.json`` (manifest), and with a learned
    probe ``probe.npy`` + ``probe.png``; when the result carries stitched objects, ``preview.png`` (before and
    after) and ``preview.h5`` (the object after, in reconstruct's result format).

    All files appear together or none does (:func:`~ptyfast.io.atomic.output_transaction`); a folder this call
    created is removed again on failure.

    Returns
    -------
    dict of what was written: ``checkpoint``, ``manifest``, and optionally ``probe``, ``probe_png``,
    ``preview``, ``result``.
    """
    import torch

    from ptyfast.io.atomic import output_folder, output_transaction
    from ptyfast.models.checkpoint import save_checkpoint

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"cannot write the model to {out}: it is a file; give a folder with -o.")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write {out}: directory {parent} does not exist; create it first.")
    with output_folder(out), output_transaction():
        o = result.options or FinetuneOptions()
        extra = {
            "probe": torch.from_numpy(np.ascontiguousarray(result.probe.astype(np.complex64))),
            "amplitude_scale": float(result.amplitude_scale),
            "finetune_history": [[h["epoch"], h["loss"], h["r_factor"]] for h in result.history],
            "finetune_options": {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                                 for k, v in asdict(o).items()},
        }
        save_checkpoint(out / f"{name}.pt", result.model, result.manifest, **extra)
        names = {"checkpoint": f"{name}.pt", "manifest": f"{name}.json"}
        if o.learn_probe:
            save_probe(out, result.probe)
            names.update(probe="probe.npy", probe_png="probe.png")
        if preview and result.before is not None and result.after is not None:
            save_preview(out / "preview.png", result.before, result.after)
            names["preview"] = "preview.png"
            _write_result(out / "preview.h5", result)
            names["result"] = "preview.h5"
    return {k: out / v for k, v in names.items()}


def _write_result(path: Path, result: FinetuneResult) -> None:
    """The fine-tuned network's stitched object in reconstruct's result format (``evaluate``, ``refine --init``
    and the viewers read it like any reconstruction)."""
    from ptyfast.runtime.output import write_reconstruction
    from ptyfast.runtime.pipeline import Reconstruction

    rec = Reconstruction(object=result.after, weight=result.weight_after, positions=result.positions,
                         origin=np.asarray(result.origin), probe=result.probe, n_frames=len(result.frames))
    write_reconstruction(path, rec, {"source": "ptyfast finetune", "model_manifest": result.manifest.to_json(),
                                     "r_factor_before": result.r_factor_before,
                                     "r_factor_after": result.r_factor_after,
                                     "frames": len(result.frames)})


def finetune_file(
    scan_path: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    probe: str | os.PathLike | None = None,
    output: str | os.PathLike = "finetuned",
    options: FinetuneOptions | None = None,
    name: str | None = None,
    device="cpu",
    progress: Callable[[int, dict], None] | None = None,
    on_start: Callable[[dict], None] | None = None,
    frames: str | None = None,
) -> tuple[FinetuneResult, dict[str, Path]]:
    """Load a scan and a model, fine-tune, and write the new model (the ``ptyfast finetune`` command).

    Every input is checked before anything is written: a bad scan, model, probe or option raises
    :class:`InputError` and leaves no output behind.

    Parameters
    ----------
    scan_path : any layout :func:`ptyfast.io.convert.load_any` reads (CXI, Tike npz, PtyNet npz/folder).
    model : shipped name or checkpoint path (``.pt``; ONNX/TensorRT files cannot be fine-tuned).
    probe : ``None`` (the scan's probe), a ``.npy``/CXI file, or ``"fresnel"``.
    output : folder for the new model.
    name : file stem of the new checkpoint (default ``<model>-ft``).
    on_start : called once with ``{"frames", "frames_total", "probe", "model"}`` before the first epoch.
    """
    from ptyfast.io.convert import load_any
    from ptyfast.models.checkpoint import load_checkpoint
    from ptyfast.models.pretrained import resolve_model

    o = (options or FinetuneOptions()).validate()
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise InputError(f"cannot write the model to {out}: it is a file; give a folder with -o.")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write {out}: directory {parent} does not exist; create it first.")
    scan = load_any(scan_path, frames=frames)
    src = str(scan_path)
    if scan.near_field:
        raise InputError(f"{src} is near-field data; fine-tuning uses the far-field model and cannot use it.")
    source = resolve_model(model)
    if source.checkpoint is None:
        raise InputError(
            f"model '{source.name}' has no torch checkpoint (.pt); fine-tuning needs the weights, not an "
            "ONNX/TensorRT export."
        )
    from ptyfast.models.preprocess import fit_probe

    p = resolve_probe(scan, probe, source=src)
    net, manifest = load_checkpoint(source.checkpoint)
    size = tuple(manifest.input_size)
    if size != tuple(scan.frame_shape) and o.fit == "none":
        raise InputError(
            f"the frames of {src} are {scan.frame_shape[0]}×{scan.frame_shape[1]} but model '{source.name}' "
            f"expects {size[0]}×{size[1]}; pass --fit crop (or bin/pad), or fine-tune a model of that size."
        )
    p = fit_probe(p, size, o.fit)  # the probe goes where the frames go
    if on_start is not None:
        on_start({"frames": len(select_frames(scan.n_frames, o.subset)), "frames_total": scan.n_frames,
                  "probe": "given" if probe is None else str(probe), "model": str(source.checkpoint)})
    result = finetune(scan, net, manifest, p, o, source=src, stitch=True, device=device, progress=progress)
    written = save_finetuned(out, result, name=name or f"{source.name}-ft")
    return result, written
