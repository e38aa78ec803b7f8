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
  loss. ptyfast keeps an auxiliary object on the scan grid, started from ``reconstruct``'s stitching of the
  training frames with the pre-trained network, and after every epoch runs ``probe_iterations`` rPIE passes
  (:func:`ptyfast.refine.refine`, object and probe updated) on it; the network is then fine-tuned
  with the updated probe (its gradient w.r.t. the probe is not used). The remaining ambiguities of
  ptychography (global complex factor, a linear phase ramp and a translation shared by ``P`` and ``O``)
  stay: probe errors are reported after removing the best global complex factor only.

Objectives (``--objective``)
----------------------------
* ``pattern`` (the paper): each pattern against its own predicted patch. Every pattern is a separate
  phase-retrieval problem; with the paper's probe (nearly flat, filling the 128² window: no oversampling)
  a single pattern does not determine its patch, so the loss can fall while the object does not improve.
* ``overlap``: each pattern against the window of the *stitched* object (``|P|²``-weighted, bilinear, as
  ``reconstruct`` blends, but without its phase-offset solve; :mod:`ptyfast.finetune.torch_stitch`):
  overlapping patches must agree, as in ptychography. The batch's live patches replace their cached copies
  in the stitched object, so a step costs O(batch).
* ``guided``: the paper's loss plus ``guide_weight ·‖O_n − W_n(Ô)‖² / ‖W_n(Ô)‖²``, where ``Ô`` is an
  auxiliary object started from ``reconstruct``'s stitching of the training frames (phase offsets solved)
  and advanced by ``probe_iterations`` rPIE sweeps per epoch (:func:`ptyfast.refine.refine`,
  measured data and known probe only) and ``W_n`` its window at frame ``n``. The network learns the
  overlap-consistent solution and keeps it: the fine-tuned network then reconstructs further scans of the
  sample at network speed.

The guard: held-out frames, validation on reconstruct's object, keep-best
-------------------------------------------------------------------------
None of the objectives above measures what the user gets: the training loss can fall while the object
``reconstruct`` writes gets worse (one pattern does not determine its patch, so the network can trade
amplitude for phase inside each patch; with free per-patch phase offsets the patches can also stop agreeing).
So, unless ``val_fraction`` is 0, an evenly spaced ``val_fraction`` of the selected frames (at least
:data:`~ptyfast.finetune.validation.MIN_HELD_OUT`) is held out: never trained on, never seen by the rPIE
sweeps. Before the first epoch, every ``val_every`` epochs and after the last, every selected frame is
reconstructed exactly as ``reconstruct`` would with the current weights
(:func:`ptyfast.runtime.pipeline.reconstruct_scan`: predicted, phase offsets solved from the overlaps,
``|P|²``-blended) and that object is propagated through the forward model at the held-out frames: their data
error ε (:class:`~ptyfast.runtime.pipeline.Consistency`, its own amplitude scale) judges the weights
(:mod:`ptyfast.finetune.validation`). The weights (with their amplitude scale and probe) of the check with
the lowest ε are returned; a check counts as better only when it lowers ε by
:data:`~ptyfast.finetune.validation.MIN_GAIN` of the best so far. If no check beats the start, the starting
weights are returned and the result's ``verdict`` says so; after ``patience`` checks in a row without a
better one the loop stops early. The R-factors are those of the training frames; the ``before``/``after``
objects are the checks' reconstructions (what ``reconstruct`` writes with those weights).

What the guard cannot see: ε is a data error, so it is blind to what the data do not constrain. Fine-tuning
can lower ε while moving the object away from the truth (amplitude and phase both worse, the network fitting
the measured patterns more closely than the true object does). Measured falls of 3–4 % in ε came with a
phase 0.7–1.9 dB worse, so :data:`~ptyfast.finetune.validation.MIN_GAIN` is 5 %: below it the starting
weights are kept. The guard reliably catches a fine-tuning that makes the data fit worse (a diverging
optimiser, a wrong probe, a drift that the data reject), not every loss of fidelity. ``pattern`` (the paper's loss, the cheapest) is the
default.

Batch normalisation
-------------------
The whole network is kept in ``eval()`` mode while its weights are updated: batch-norm layers (PtyNet-B)
normalise with their frozen pre-training running statistics and never update them, so a fine-tuning
batch of a few correlated patterns of one sample cannot corrupt them (the reference code trained in
``train()`` mode and let them drift). BN's affine weights are trained like any other weight unless frozen.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ptyfast import threads
from ptyfast.allocator import keep_freed_memory
from ptyfast.errors import InputError
from ptyfast.finetune.options import FinetuneOptions, FinetuneResult, select_frames
from ptyfast.finetune.validation import MIN_GAIN, Validation, Validator, held_out_frames

__all__ = ["finetune", "predict_object"]


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


class _Network:
    """The network as fine-tuning calls it: channels-last on the CPU, bf16 autocast when asked, fp32 out."""

    def __init__(self, model, device, amp: str) -> None:
        import torch

        self.model, self.device = model, torch.device(device)
        self.channels_last = self.device.type == "cpu"
        self.autocast = dict(device_type=self.device.type, dtype=torch.bfloat16, enabled=amp == "bf16")

    def __call__(self, xb):
        import torch

        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(**self.autocast):
            a, ph = self.model(xb)
        return a.float(), ph.float()

    def over(self, x, batch: int):
        """Yield ``(start, amplitude, phase)`` for consecutive batches of the (N, 1, H, W) tensor ``x``."""
        for s in range(0, len(x), batch):
            yield (s, *self(x[s : s + batch].to(self.device)))


class _Stitch:
    """``|P|²``-weighted overlap-add of predicted patches into a numpy object (what reconstruct writes)."""

    def __init__(self, shape: tuple[int, int], weight: np.ndarray) -> None:
        self.num = np.zeros(shape, np.complex64)
        self.wsum = np.zeros(shape, np.float32)
        self.weight = np.asarray(weight, np.float32)

    def add(self, amplitude, phase, positions: np.ndarray) -> None:
        import torch

        from ptyfast.kernels import overlap_add

        patches = torch.polar(amplitude, phase).cpu().numpy().astype(np.complex64, copy=False)
        overlap_add(self.num, patches, positions, weights=self.weight, weight_accum=self.wsum)

    def object(self) -> np.ndarray:
        from ptyfast.kernels import normalise

        return normalise(self.num, self.wsum)


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

    stitch = _Stitch(tuple(object_shape), np.abs(probe) ** 2)
    net = _Network(model, device, amp)
    net.channels_last = False  # the caller's module layout is left as it is
    was = model.training
    model.eval()
    with torch.no_grad():
        for s, a, ph in net.over(torch.from_numpy(np.ascontiguousarray(x)), batch):
            stitch.add(a, ph, positions[s : s + len(a)])
    model.train(was)
    return stitch.object(), stitch.wsum


@dataclass
class _Run:
    """What every pass of one fine-tuning run shares: the network, the selected frames (network input ``x``,
    measured amplitudes ``meas``, both on the CPU), the data term, the probe (on the device, updated in place
    when it is learned) and its normalised intensity ``weight``, the windows on the object grid, and for
    ``--objective overlap`` the stitched object."""

    options: FinetuneOptions
    net: _Network
    device: object
    x: object
    meas: object
    data_term: object
    probe: object
    weight: object
    positions: np.ndarray
    shape: tuple[int, int]
    stitched: object = None

    @property
    def eval_batch(self) -> int:
        return max(self.options.batch, 32)


def _initial_pass(run: _Run):
    """The pre-trained network's predictions of every training frame: each patch's mean phase (the anchors)
    and the predicted amplitudes (through the stitched object for ``overlap``)."""
    import torch

    from ptyfast.finetune import torch_forward
    from ptyfast.finetune.objectives import mean_phase

    n = len(run.x)
    anchors, pred = torch.empty(n), torch.empty(run.meas.shape)
    with torch.no_grad():
        for s, a, ph in run.net.over(run.x, run.eval_batch):
            anchors[s : s + len(a)] = mean_phase(ph, run.weight).cpu()
            pred[s : s + len(a)] = torch_forward.predicted_amplitude(run.probe, a, ph).cpu()
            if run.stitched is not None:
                run.stitched.cache[s : s + len(a)] = torch.polar(a, ph)
        if run.stitched is not None:  # the data as seen through the stitched object (what the objective compares)
            run.stitched.restitch()
            for s in range(0, n, run.eval_batch):
                pred[s : s + run.eval_batch] = run.stitched.seen_through(
                    run.probe, run.stitched.every[s : s + run.eval_batch]).cpu()
    return anchors.to(run.device), pred


def _epoch(run: _Run, opt, order, log_scale, anchors, targets) -> tuple[float, float]:
    """One pass over the frames in ``order`` (optimiser steps of ``batch`` frames); returns the mean loss and
    the R-factor of the predictions made on the way."""
    import torch

    from ptyfast.finetune import torch_forward
    from ptyfast.finetune.objectives import guide_term, mean_phase

    o, dev, stitched = run.options, run.device, run.stitched
    tot = rnum = rden = 0.0
    for s in range(0, len(order), o.batch):
        ib = order[s : s + o.batch]
        ib_d = ib.to(dev)
        mb = run.meas[ib].to(dev)
        a, ph = run.net(run.x[ib].to(dev))
        if stitched is not None:  # this batch's live patches replace their cached copies in the stitched object
            live = torch.polar(a, ph)
            pred = torch.exp(log_scale) * stitched.seen_through(run.probe, ib_d, stitched.live(live, ib_d))
        else:
            pred = torch.exp(log_scale) * torch_forward.predicted_amplitude(run.probe, a, ph, eps=1e-12)
        loss = run.data_term(pred, mb)
        if targets is not None:
            loss = loss + o.guide_weight * guide_term(a, ph, targets[ib_d])
        if o.phase_anchor > 0:
            drift = mean_phase(ph, run.weight) - anchors[ib_d]
            # overlap: the data fix every patch's phase relative to its neighbours; only the global offset is free
            loss = loss + o.phase_anchor * (drift.mean() ** 2 if stitched is not None else (drift**2).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if stitched is not None:
            with torch.no_grad():
                stitched.commit(live, ib_d)
        tot += float(loss.detach()) * len(ib)
        with torch.no_grad():
            rn, rd = run.data_term.r_factor(pred.detach(), mb)
            rnum, rden = rnum + float(rn), rden + float(rd)
    return tot / len(order), rnum / max(rden, 1e-30)


def _final_pass(run: _Run, scale: float) -> float:
    """R-factor of the fine-tuned network over the training frames (through the stitched object for
    ``overlap``)."""
    import torch

    from ptyfast.finetune import torch_forward

    rnum = rden = 0.0
    stitched, dev = run.stitched, run.device
    with torch.no_grad():
        for s, a, ph in run.net.over(run.x, run.eval_batch):
            if stitched is not None:  # R-factor through the stitched object, below
                stitched.cache[s : s + len(a)] = torch.polar(a, ph)
            else:
                pred = scale * torch_forward.predicted_amplitude(run.probe, a, ph)
                rn, rd = run.data_term.r_factor(pred, run.meas[s : s + len(a)].to(dev))
                rnum, rden = rnum + float(rn), rden + float(rd)
        if stitched is not None:
            stitched.restitch()
            for s in range(0, len(run.x), run.eval_batch):
                pred = scale * stitched.seen_through(run.probe, stitched.every[s : s + run.eval_batch])
                rn, rd = run.data_term.r_factor(pred, run.meas[s : s + run.eval_batch].to(dev))
                rnum, rden = rnum + float(rn), rden + float(rd)
    return rnum / max(rden, 1e-30)


def _finetuned_manifest(manifest, summary: dict, *, source: str, frames: int, total: int, epochs: int,
                        probe: np.ndarray | None, held: int = 0):
    """The manifest of the fine-tuned network (``finetuned_on``, ``training["finetune"]``; a learned probe's
    hash and power when ``probe`` is given)."""
    from ptyfast import __version__
    from ptyfast.models.manifest import probe_hash

    kept_out = f" ({held} held out)" if held else ""
    new = replace(manifest, finetuned_on=f"{Path(source).name if source else 'scan'}: {frames} of {total} frames"
                                         f"{kept_out}, {epochs} epochs",
                  training={**(manifest.training or {}), "finetune": summary}, ptyfast_version=__version__)
    if probe is not None:
        new = replace(new, probe_sha256=probe_hash(probe), probe_photons=float(np.sum(np.abs(probe) ** 2)))
    return new


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
        Also return the objects before and after: ``reconstruct``'s stitching (phase offsets solved) of every
        selected frame with the starting and with the returned weights.
    device : str or torch.device
        Where to run (CPU by default).
    progress : callable(epoch, info) or None
        Called after every epoch with ``loss``, ``r_factor``, ``lr``, ``scale``, ``time_s``, and after a check
        of the weights also ``held_out_error`` (ε).

    Returns
    -------
    FinetuneResult
    """
    import torch

    from ptyfast.finetune import torch_forward
    from ptyfast.finetune.objectives import DataTerm, OverlapObject
    from ptyfast.kernels import gather
    from ptyfast.models.preprocess import model_grid, preprocess
    from ptyfast.refine import refine
    from ptyfast.scan import Scan

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
    if dev.type == "cpu":
        keep_freed_memory()  # no fresh pages for every step's activations (ptyfast.allocator)

    # The selected frames on the model's grid; the held-out ones are never trained on.
    sel = select_frames(scan.n_frames, o.subset)
    held = held_out_frames(sel, o.val_fraction)
    in_train = ~np.isin(sel, held)
    idx = sel[in_train]
    n = len(idx)
    guard = len(held) > 0
    grid = model_grid(scan.positions, scan.frame_shape[0], size, o.fit, scan.mask)
    pos, mask = grid.positions[idx], grid.mask
    frames = grid.frames(scan, idx)
    meas_np = np.sqrt(np.maximum(frames, 0.0)).astype(np.float32)
    held_frames = grid.frames(scan, held) if guard else np.zeros((0, *size), np.float32)
    validator = Validator(scan.select(sel), o.fit, manifest, np.flatnonzero(~in_train), held_frames, mask,
                          batch=max(o.batch, 32))

    model = model.to(dev)
    model.eval()  # BN uses (and keeps) its pre-training running statistics; see the module docstring
    if dev.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    net_params = _set_trainable(model, o.freeze)
    probe_t = torch.from_numpy(probe).to(dev).clone()  # updated in place by the probe step when learning the probe
    guided, overlap = o.objective == "guided", o.objective == "overlap"
    run = _Run(options=o, net=_Network(model, dev, o.amp), device=dev,
               x=torch.from_numpy(preprocess(frames, manifest, probe_power=float(np.sum(np.abs(probe) ** 2)),
                                             mask=mask, probe=probe)),
               meas=torch.from_numpy(meas_np), data_term=DataTerm(o.loss, meas_np, mask, dev), probe=probe_t,
               weight=(probe_t.abs() ** 2) / (probe_t.abs() ** 2).sum(), positions=pos, shape=grid.shape)
    if overlap:
        run.stitched = OverlapObject(pos, size, grid.shape, np.abs(probe) ** 2, dev, run.eval_batch)

    # Pass 0: pre-trained predictions → R-factor before, the scale fit, the phase anchors.
    anchors, pred0 = _initial_pass(run)
    m0 = torch.from_numpy(mask.astype(np.float32)) if mask is not None else torch.ones(size)
    den_aa = float((pred0 * pred0 * m0).sum())
    s_fit = float((pred0 * run.meas * m0).sum()) / den_aa if den_aa > 0 else float("nan")
    s0 = s_fit if o.scale == "fit" else 1.0
    if not (np.isfinite(s0) and s0 > 0):
        raise InputError(
            f"the pre-trained predictions of {source or 'the scan'} do not fit its data at any positive scale; "
            "check the probe and the frames."
        )
    rn, rd = torch_forward.r_factor(s0 * pred0, run.meas, m0)
    r_before = float(rn) / max(float(rd), 1e-30)
    del pred0
    # guided: the rPIE object's amplitude is relative to s·P, so a learnable s would feed back through the
    # guide (s up → object down → patches down → s up): keep s at its fit.
    learn_scale = o.scale == "fit" and not o.learn_probe and not guided
    if o.learn_probe:  # the probe's own power carries the scale: fold the fit into it, keep s = 1
        probe_t.mul_(s0)
        s0 = 1.0
    log_scale = torch.nn.Parameter(torch.tensor(math.log(s0), device=dev), requires_grad=learn_scale)

    def current_probe() -> np.ndarray:
        return (torch.exp(log_scale.detach()) * probe_t).cpu().numpy()

    def check() -> "Validation":
        with threads.limited(o.threads) if o.threads else contextlib.nullcontext():
            return validator(run.net, current_probe())

    consensus = None
    if o.learn_probe or guided:
        # The auxiliary object starts from what reconstruct makes of the training frames (offsets solved),
        # placed on the training grid; the held-out frames stay out of it.
        with threads.limited(o.threads) if o.threads else contextlib.nullcontext():
            start = validator(run.net, current_probe(), subset=validator.train).reconstruction
        consensus = _on_grid(start.object, start.origin, grid.origin, grid.shape)
        probe_scan = Scan(diffraction=frames, positions=pos, probe=probe_t.cpu().numpy(), mask=mask)

    # The guard: the weights are judged by the held-out frames' data error against reconstruct's object.
    first = check() if guard or stitch else None
    kept = _Kept(epoch=0, error=first.held_out_error if guard else float("nan"), state=_snapshot(model),
                 log_scale=float(log_scale.detach()), probe=probe_t.clone(),
                 reconstruction=first.reconstruction if first is not None else None)
    error_start, checks_since, lowest_later = kept.error, 0, float("inf")

    groups = [{"params": net_params, "lr": o.lr}]
    if learn_scale:
        groups.append({"params": [log_scale], "lr": o.scale_lr})
    opt = torch.optim.Adam(groups)
    step = max(1, int(round(0.2 * o.epochs)))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=0.5)

    gen = torch.Generator().manual_seed(o.seed)
    history: list[dict] = []
    targets = None
    epochs_run = 0
    t0 = time.perf_counter()
    for epoch in range(1, o.epochs + 1):
        if o.learn_probe or guided:  # rPIE sweeps on the auxiliary object (+ probe) before the network's pass
            with torch.no_grad():
                probe_run = refine(probe_scan, init=consensus, iterations=o.probe_iterations,
                                   update_probe=o.learn_probe, probe=(torch.exp(log_scale) * probe_t).cpu().numpy(),
                                   batch=o.batch if o.batch > 1 else None, probe_step=o.probe_step,
                                   rescale_probe=False, seed=epoch)
                if not probe_run.diverged:
                    consensus = probe_run.object
                    if o.learn_probe:  # the network sees the new probe (s = 1 when learning the probe)
                        probe_t.copy_(torch.from_numpy(np.asarray(probe_run.probe, np.complex64)).to(dev))
                if guided:
                    targets = torch.from_numpy(gather(consensus.astype(np.complex64), pos, size)).to(dev)
        loss, r_factor = _epoch(run, opt, torch.randperm(n, generator=gen), log_scale, anchors, targets)
        sched.step()
        epochs_run = epoch
        info = {"epoch": epoch, "loss": loss, "r_factor": r_factor, "lr": opt.param_groups[0]["lr"],
                "scale": float(torch.exp(log_scale.detach())), "time_s": time.perf_counter() - t0}
        if guard and (epoch % o.val_every == 0 or epoch == o.epochs):
            v = check()
            info["held_out_error"] = v.held_out_error
            lowest_later = min(lowest_later, v.held_out_error)
            if v.held_out_error < kept.error * (1 - MIN_GAIN):
                kept = _Kept(epoch=epoch, error=v.held_out_error, state=_snapshot(model),
                             log_scale=float(log_scale.detach()), probe=probe_t.clone(),
                             reconstruction=v.reconstruction)
                checks_since = 0
            else:
                checks_since += 1
        history.append(info)
        if progress is not None:
            progress(epoch, info)
        if guard and checks_since >= o.patience:
            break
    elapsed = time.perf_counter() - t0

    if guard:  # back to the weights (and scale, probe) with the lowest held-out error
        model.load_state_dict(kept.state)
        with torch.no_grad():
            log_scale.fill_(kept.log_scale)
            probe_t.copy_(kept.probe)
        after = kept.reconstruction
    else:
        after = check().reconstruction if stitch else None
    kept_epoch = kept.epoch if guard else epochs_run
    verdict = _verdict(guard, error_start, kept.error, lowest_later, kept_epoch, epochs_run, o)

    # Final pass: R-factor of the training frames with the weights returned.
    scale = float(torch.exp(log_scale).detach())
    r_after = _final_pass(run, scale)

    # Back to a plain fp32, contiguous, CPU, eval-mode module (exportable like any other).
    model = model.to("cpu").to(memory_format=torch.contiguous_format).float().eval()
    for p in model.parameters():
        p.requires_grad_(True)
    final_probe = (scale * probe_t.cpu().numpy()).astype(np.complex64)

    error_after = kept.error if guard else float("nan")
    summary = {
        "scan": source, "frames": int(n), "frames_total": int(scan.n_frames), "subset": str(o.subset),
        "epochs": o.epochs, "epochs_run": epochs_run, "batch": o.batch, "lr": o.lr,
        "schedule": f"StepLR(step={step} epochs, gamma=0.5)",
        "loss": o.loss, "objective": o.objective, "guide_weight": o.guide_weight if guided else None,
        "freeze": o.freeze, "learn_probe": o.learn_probe, "scale_mode": o.scale,
        "amplitude_scale": scale, "amplitude_scale_fit": float(s_fit), "phase_anchor": o.phase_anchor,
        "r_factor_before": float(r_before), "r_factor_after": float(r_after),
        "val_fraction": o.val_fraction, "val_every": o.val_every, "patience": o.patience,
        "held_out_frames": [int(i) for i in held], "held_out_error_start": _json_float(error_start),
        "held_out_error_kept": _json_float(error_after), "kept_epoch": int(kept_epoch),
        "validations": [[h["epoch"], _json_float(h["held_out_error"])] for h in history if "held_out_error" in h],
        "verdict": verdict, "time_s": round(elapsed, 2),
        "amp": o.amp, "batch_norm": "eval mode, running statistics frozen",
        "hardware": f"{platform.machine()} {os.cpu_count()} cores"
        + (f", {torch.cuda.get_device_name()}" if dev.type == "cuda" else ""),
        "torch": torch.__version__,
    }
    new_manifest = _finetuned_manifest(manifest, summary, source=source, frames=n, total=scan.n_frames,
                                       held=len(held), epochs=epochs_run,
                                       probe=final_probe if o.learn_probe else None)
    before = first.reconstruction if (stitch and first is not None) else None
    after = after if stitch else None
    return FinetuneResult(model=model, manifest=new_manifest, probe=final_probe, amplitude_scale=scale,
                          frames=idx, history=history, r_factor_before=float(r_before),
                          r_factor_after=float(r_after), time_s=elapsed,
                          before=before.object if before is not None else None,
                          after=after.object if after is not None else None,
                          weight_before=before.weight if before is not None else None,
                          weight_after=after.weight if after is not None else None,
                          origin=tuple(float(v) for v in (after.origin if after is not None else grid.origin)),
                          positions=after.positions if after is not None else pos, options=o,
                          pixel_size_m=float(scan.object_pixel_size(size[0], o.fit)), held_out=held,
                          held_out_error_before=float(error_start), held_out_error_after=float(error_after),
                          kept_epoch=int(kept_epoch), epochs_run=int(epochs_run), verdict=verdict)


@dataclass
class _Kept:
    """The best weights so far (by the held-out data error), with the scale and probe that went with them."""

    epoch: int
    error: float
    state: dict
    log_scale: float
    probe: object
    reconstruction: object


def _snapshot(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _json_float(v: float):
    return float(v) if np.isfinite(v) else None


def _on_grid(obj: np.ndarray, origin, grid_origin, shape) -> np.ndarray:
    """``obj`` (grid pixel (0, 0) at scan position ``origin``) placed on a grid of ``shape`` whose pixel (0, 0) is
    ``grid_origin`` (both origins are whole pixels; the object lies inside that grid)."""
    out = np.zeros(shape, np.complex64)
    dy, dx = (int(round(v)) for v in np.asarray(origin) - np.asarray(grid_origin))
    h, w = min(obj.shape[0], shape[0] - dy), min(obj.shape[1], shape[1] - dx)
    out[dy : dy + h, dx : dx + w] = obj[:h, :w]
    return out


def _fmt(e: float) -> str:
    return f"{e:.3g}" if np.isfinite(e) else ("∞" if e == float("inf") else "n/a")


def _verdict(guard: bool, start: float, kept: float, lowest_later: float, kept_epoch: int, epochs_run: int,
             o: FinetuneOptions) -> str:
    """One plain sentence saying which weights fine-tuning returned and why."""
    stopped = (f" It stopped after {epochs_run} of {o.epochs} epochs ({o.patience} checks without a lower error)."
               if epochs_run < o.epochs else "")
    if not guard:
        return ("no frames were held out (val_fraction 0), so the weights after the last epoch were kept "
                "without a check.")
    if kept_epoch == 0:
        return (f"fine-tuning did not lower the held-out data error (ε {_fmt(start)} → {_fmt(lowest_later)}); "
                f"the starting weights were kept.{stopped}")
    return (f"fine-tuning lowered the held-out data error (ε {_fmt(start)} → {_fmt(kept)}); the weights of epoch "
            f"{kept_epoch} were kept.{stopped}")
