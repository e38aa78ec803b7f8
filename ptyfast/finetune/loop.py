"""Physics fine-tuning of a pre-trained network on one scan, without ground truth (Pan et al. 2023, STAR
Methods "Fine-tuning method"), plus joint probe learning (the paper's stated future work).

Method
------
For every pattern ``I_n`` of the scan the network predicts an object patch ``O_n = A_n·exp(iφ_n)`` from the
input its manifest's preprocessing makes (:func:`ptyfast.models.preprocess.preprocess`), the exit wave ``P·O_n`` is propagated with the project's forward model
(:mod:`ptyfast.finetune.torch_forward`, ``Ψ = fftshift(fft2(·, norm="ortho"))``) and the loss compares
predicted and measured amplitudes:

* ``l1`` (paper): ``mean_valid |s·|Ψ_n| − √I_n| / mean_valid √I`` — an R-factor-like, dimensionless loss;
* ``poisson``: the Poisson negative log-likelihood ``mean_valid (λ − I·log λ) / mean_valid I`` with
  ``λ = s²·|Ψ_n|²``, the right likelihood for photon counts at low flux.

Adam, learning rate 1e-4 halved every 20 % of the epochs (the paper's stepped schedule). Masked detector
pixels (``scan.mask`` False) are left out of the loss and of the R-factor.

Ambiguities the per-pattern loss cannot resolve, and what ptyfast does about them
---------------------------------------------------------------------------------
* **Absolute scale.** The network input is normalised (by the probe's mean intensity, or per pattern for the
  paper's networks), so it never sees the photon count; the amplitude it predicts is the training prior's
  transmission. The predicted intensity scales as
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
(:func:`ptyfast.runtime.reconstruct.reconstruct_scan`: predicted, phase offsets solved from the overlaps,
``|P|²``-blended) and that object is propagated through the forward model at the held-out frames: their data
error ε (:class:`~ptyfast.runtime.consistency.Consistency`, its own amplitude scale) judges the weights
(:mod:`ptyfast.finetune.validation`). The weights (with their amplitude scale and probe) of the check with
the lowest ε are returned; a check counts as better only when it lowers ε by
:data:`~ptyfast.finetune.validation.MIN_GAIN` of the best so far. If no check beats the start, the starting
weights are returned and the result's ``verdict`` says so; after ``patience`` checks in a row without a
better one the loop stops early. The R-factors are those of the training frames; the ``before``/``after``
objects are the checks' reconstructions (what ``reconstruct`` writes with those weights).

What the guard cannot see: ε is a data error, so it is blind to what the data do not constrain. Fine-tuning
can lower ε while moving the object away from the truth (amplitude and phase both worse, the network fitting
the measured patterns more closely than the true object does), so a check must lower ε by
:data:`~ptyfast.finetune.validation.MIN_GAIN` to replace the starting weights (the evidence for its value:
``docs/benchmarks.md``, "Fine-tuning guard"). The guard reliably catches a fine-tuning that makes the data fit
worse (a diverging optimiser, a wrong probe, a drift that the data reject), not every loss of fidelity.
``pattern`` (the paper's loss, the cheapest) is the default.

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
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ptyfast import threads
from ptyfast.allocator import keep_freed_memory
from ptyfast.errors import InputError
from ptyfast.finetune.network import Network, predict_object, set_trainable
from ptyfast.finetune.options import FinetuneOptions, FinetuneResult, select_frames
from ptyfast.finetune.passes import Run, final_pass, initial_pass, train_epoch
from ptyfast.finetune.report import Kept, finetuned_manifest, on_grid, snapshot, summary, verdict
from ptyfast.finetune.validation import MIN_GAIN, Validation, Validator, held_out_frames

__all__ = ["finetune", "predict_object"]


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
    o = (options or FinetuneOptions()).validate()
    setup = _prepare(scan, model, manifest, probe, o, source, device)
    scale = _fit_scale(setup)
    tuned = _tune(setup, scale, stitch, progress)
    return _result(setup, scale, tuned, stitch)


@dataclass
class _Setup:
    """One run's fixed parts: the options, the scan and its name, the model (on the device, its trainable
    weights ``params``), the probe (numpy, and ``probe_t`` on the device, updated in place when it is learned),
    the selected frames on the model's grid (``idx`` trained on, ``held`` held out: ``guard`` when there are
    any), the validator and the passes' shared :class:`~ptyfast.finetune.passes.Run`."""

    options: FinetuneOptions
    scan: object
    manifest: object
    source: str
    size: tuple[int, int]
    probe: np.ndarray
    idx: np.ndarray
    held: np.ndarray
    grid: object
    frames: np.ndarray
    mask: np.ndarray | None
    validator: Validator
    model: object
    params: list
    probe_t: object
    run: Run

    @property
    def guard(self) -> bool:
        return len(self.held) > 0

    @property
    def positions(self) -> np.ndarray:
        return self.run.positions


@dataclass
class _Scale:
    """The amplitude scale: its least-squares ``fit`` to the pre-trained predictions, the learnable ``log_scale``
    (``learn`` when it is trained), the R-factor before fine-tuning and the patches' phase anchors."""

    fit: float
    log_scale: object
    learn: bool
    r_before: float
    anchors: object


@dataclass
class _Tuned:
    """What the epoch loop leaves: the per-epoch ``history``, the guard (the weights kept), the first check,
    the epochs run, the loop's time and the schedule's step."""

    history: list[dict]
    guard: _Guard
    first: Validation | None
    epochs_run: int
    time_s: float
    step: int


def _prepare(scan, model, manifest, probe, o: FinetuneOptions, source: str, device) -> _Setup:
    """Check the inputs, select the frames (training and held out) on the model's grid, and put the model,
    probe and frames on the device."""
    import torch

    from ptyfast.finetune.objectives import DataTerm, OverlapObject
    from ptyfast.models.preprocess import model_grid, preprocess

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
    grid = model_grid(scan.positions, scan.frame_shape[0], size, o.fit, scan.mask)
    pos, mask = grid.positions[idx], grid.mask
    frames = grid.frames(scan, idx)
    meas_np = np.sqrt(np.maximum(frames, 0.0)).astype(np.float32)
    held_frames = grid.frames(scan, held) if len(held) else np.zeros((0, *size), np.float32)
    validator = Validator(scan.select(sel), o.fit, manifest, np.flatnonzero(~in_train), held_frames, mask,
                          batch=max(o.batch, 32))

    model = model.to(dev)
    model.eval()  # BN uses (and keeps) its pre-training running statistics; see the module docstring
    if dev.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    params = set_trainable(model, o.freeze)
    probe_t = torch.from_numpy(probe).to(dev).clone()  # updated in place by the probe step when learning the probe
    run = Run(options=o, net=Network(model, dev, o.amp), device=dev,
              x=torch.from_numpy(preprocess(frames, manifest, probe_power=float(np.sum(np.abs(probe) ** 2)),
                                            mask=mask, probe=probe)),
              meas=torch.from_numpy(meas_np), data_term=DataTerm(o.loss, meas_np, mask, dev), probe=probe_t,
              weight=(probe_t.abs() ** 2) / (probe_t.abs() ** 2).sum(), positions=pos, shape=grid.shape)
    if o.objective == "overlap":
        run.stitched = OverlapObject(pos, size, grid.shape, np.abs(probe) ** 2, dev, run.eval_batch)
    return _Setup(options=o, scan=scan, manifest=manifest, source=source, size=size, probe=probe, idx=idx,
                  held=held, grid=grid, frames=frames, mask=mask, validator=validator, model=model, params=params,
                  probe_t=probe_t, run=run)


def _fit_scale(s: _Setup) -> _Scale:
    """Pass 0: the pre-trained predictions give the R-factor before, the amplitude scale's fit and the phase
    anchors; the learnable scale starts at the fit (``scale="fit"``) or at 1."""
    import torch

    from ptyfast.finetune import torch_forward

    o, run = s.options, s.run
    anchors, pred0 = initial_pass(run)
    m0 = torch.from_numpy(s.mask.astype(np.float32)) if s.mask is not None else torch.ones(s.size)
    den_aa = float((pred0 * pred0 * m0).sum())
    s_fit = float((pred0 * run.meas * m0).sum()) / den_aa if den_aa > 0 else float("nan")
    s0 = s_fit if o.scale == "fit" else 1.0
    if not (np.isfinite(s0) and s0 > 0):
        raise InputError(
            f"the pre-trained predictions of {s.source or 'the scan'} do not fit its data at any positive scale; "
            "check the probe and the frames."
        )
    rn, rd = torch_forward.r_factor(s0 * pred0, run.meas, m0)
    r_before = float(rn) / max(float(rd), 1e-30)
    del pred0
    # guided: the rPIE object's amplitude is relative to s·P, so a learnable s would feed back through the
    # guide (s up → object down → patches down → s up): keep s at its fit.
    learn = o.scale == "fit" and not o.learn_probe and o.objective != "guided"
    if o.learn_probe:  # the probe's own power carries the scale: fold the fit into it, keep s = 1
        s.probe_t.mul_(s0)
        s0 = 1.0
    log_scale = torch.nn.Parameter(torch.tensor(math.log(s0), device=run.device), requires_grad=learn)
    return _Scale(fit=s_fit, log_scale=log_scale, learn=learn, r_before=r_before, anchors=anchors)


def _current_probe(s: _Setup, log_scale) -> np.ndarray:
    """The probe as the forward model uses it now (scale folded in), as numpy."""
    import torch

    return (torch.exp(log_scale.detach()) * s.probe_t).cpu().numpy()


def _check(s: _Setup, log_scale, subset: np.ndarray | None = None) -> Validation:
    """Reconstruct the selected frames (or ``subset``) as ``reconstruct`` would with the current weights, and
    score the held-out ones."""
    with threads.limited(s.options.threads) if s.options.threads else contextlib.nullcontext():
        return s.validator(s.run.net, _current_probe(s, log_scale), subset=subset)


class _Auxiliary:
    """The auxiliary object of ``--learn-probe`` and ``--objective guided``: it starts from what reconstruct
    makes of the training frames (offsets solved), placed on the training grid (the held-out frames stay out of
    it), and is advanced by rPIE sweeps before every epoch."""

    def __init__(self, s: _Setup, log_scale) -> None:
        from ptyfast.scan import Scan

        self.setup, self.log_scale = s, log_scale
        start = _check(s, log_scale, subset=s.validator.train).reconstruction
        self.object = on_grid(start.object, start.origin, s.grid.origin, s.grid.shape)
        self.scan = Scan(diffraction=s.frames, positions=s.positions, probe=s.probe_t.cpu().numpy(), mask=s.mask)

    def sweep(self, epoch: int):
        """``probe_iterations`` rPIE sweeps (object, and the probe when it is learned); returns the guide's
        targets (the object's windows at the training frames, on the device) for ``guided``, else None."""
        import torch

        from ptyfast.kernels import gather
        from ptyfast.refine import refine

        s = self.setup
        o, probe_t = s.options, s.probe_t
        with torch.no_grad():
            probe_run = refine(self.scan, init=self.object, iterations=o.probe_iterations,
                               update_probe=o.learn_probe, probe=(torch.exp(self.log_scale) * probe_t).cpu().numpy(),
                               batch=o.batch if o.batch > 1 else None, probe_step=o.probe_step,
                               rescale_probe=False, seed=epoch)
            if not probe_run.diverged:
                self.object = probe_run.object
                if o.learn_probe:  # the network sees the new probe (s = 1 when learning the probe)
                    probe_t.copy_(torch.from_numpy(np.asarray(probe_run.probe, np.complex64)).to(s.run.device))
            if o.objective == "guided":
                return torch.from_numpy(gather(self.object.astype(np.complex64), s.positions, s.size)).to(
                    s.run.device)
        return None


class _Guard:
    """Keep-best on the held-out data error: the weights (with scale and probe) of the check with the lowest ε,
    a check counting as better only when it lowers ε by :data:`MIN_GAIN`; ``since`` counts the checks since."""

    def __init__(self, s: _Setup, first: Validation | None, log_scale) -> None:
        self.on = s.guard
        self.kept = Kept(epoch=0, error=first.held_out_error if self.on else float("nan"), state=snapshot(s.model),
                         log_scale=float(log_scale.detach()), probe=s.probe_t.clone(),
                         reconstruction=first.reconstruction if first is not None else None)
        self.start, self.since, self.lowest_later = self.kept.error, 0, float("inf")

    def judge(self, epoch: int, v: Validation, s: _Setup, log_scale) -> None:
        self.lowest_later = min(self.lowest_later, v.held_out_error)
        if v.held_out_error < self.kept.error * (1 - MIN_GAIN):
            self.kept = Kept(epoch=epoch, error=v.held_out_error, state=snapshot(s.model),
                             log_scale=float(log_scale.detach()), probe=s.probe_t.clone(),
                             reconstruction=v.reconstruction)
            self.since = 0
        else:
            self.since += 1

    def restore(self, s: _Setup, log_scale) -> None:
        """Back to the kept weights, scale and probe."""
        import torch

        s.model.load_state_dict(self.kept.state)
        with torch.no_grad():
            log_scale.fill_(self.kept.log_scale)
            s.probe_t.copy_(self.kept.probe)


def _tune(s: _Setup, sc: _Scale, stitch: bool, progress) -> _Tuned:
    """The epoch loop: rPIE sweeps on the auxiliary object (when there is one), one pass of optimiser steps,
    and every ``val_every`` epochs (and after the last) a check of the weights by the guard, which stops the
    loop after ``patience`` checks without a better one."""
    import torch

    o, log_scale = s.options, sc.log_scale
    aux = _Auxiliary(s, log_scale) if o.learn_probe or o.objective == "guided" else None
    first = _check(s, log_scale) if s.guard or stitch else None
    guard = _Guard(s, first, log_scale)

    groups = [{"params": s.params, "lr": o.lr}]
    if sc.learn:
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
        if aux is not None:  # rPIE sweeps on the auxiliary object (+ probe) before the network's pass
            targets = aux.sweep(epoch)
        loss, r_factor = train_epoch(s.run, opt, torch.randperm(len(s.idx), generator=gen), log_scale, sc.anchors,
                                     targets)
        sched.step()
        epochs_run = epoch
        info = {"epoch": epoch, "loss": loss, "r_factor": r_factor, "lr": opt.param_groups[0]["lr"],
                "scale": float(torch.exp(log_scale.detach())), "time_s": time.perf_counter() - t0}
        if s.guard and (epoch % o.val_every == 0 or epoch == o.epochs):
            v = _check(s, log_scale)
            info["held_out_error"] = v.held_out_error
            guard.judge(epoch, v, s, log_scale)
        history.append(info)
        if progress is not None:
            progress(epoch, info)
        if s.guard and guard.since >= o.patience:
            break
    return _Tuned(history=history, guard=guard, first=first, epochs_run=epochs_run,
                  time_s=time.perf_counter() - t0, step=step)


def _result(s: _Setup, sc: _Scale, t: _Tuned, stitch: bool) -> FinetuneResult:
    """The weights with the lowest held-out error (or the last ones without a guard), their R-factor, the
    model back as a plain fp32 CPU module, and the new manifest."""
    import torch

    o, kept = s.options, t.guard.kept
    if s.guard:  # back to the weights (and scale, probe) with the lowest held-out error
        t.guard.restore(s, sc.log_scale)
        after = kept.reconstruction
    else:
        after = _check(s, sc.log_scale).reconstruction if stitch else None
    kept_epoch = kept.epoch if s.guard else t.epochs_run
    said = verdict(s.guard, t.guard.start, kept.error, t.guard.lowest_later, kept_epoch, t.epochs_run, o)

    # Final pass: R-factor of the training frames with the weights returned.
    scale = float(torch.exp(sc.log_scale).detach())
    r_after = final_pass(s.run, scale)

    # Back to a plain fp32, contiguous, CPU, eval-mode module (exportable like any other).
    model = s.model.to("cpu").to(memory_format=torch.contiguous_format).float().eval()
    for p in model.parameters():
        p.requires_grad_(True)
    final_probe = (scale * s.probe_t.cpu().numpy()).astype(np.complex64)

    n, held, scan = len(s.idx), s.held, s.scan
    error_after = kept.error if s.guard else float("nan")
    record = summary(o, source=s.source, frames=n, frames_total=scan.n_frames, epochs_run=t.epochs_run, step=t.step,
                     scale=scale, scale_fit=sc.fit, r_before=sc.r_before, r_after=r_after, held=held,
                     error_start=t.guard.start, error_kept=error_after, kept_epoch=kept_epoch, history=t.history,
                     verdict=said, time_s=t.time_s, device=s.run.device)
    new_manifest = finetuned_manifest(s.manifest, record, source=s.source, frames=n, total=scan.n_frames,
                                      held=len(held), epochs=t.epochs_run,
                                      probe=final_probe if o.learn_probe else None)
    before = t.first.reconstruction if (stitch and t.first is not None) else None
    after = after if stitch else None
    return FinetuneResult(model=model, manifest=new_manifest, probe=final_probe, amplitude_scale=scale,
                          frames=s.idx, history=t.history, r_factor_before=float(sc.r_before),
                          r_factor_after=float(r_after), time_s=t.time_s,
                          before=before.object if before is not None else None,
                          after=after.object if after is not None else None,
                          weight_before=before.weight if before is not None else None,
                          weight_after=after.weight if after is not None else None,
                          origin=tuple(float(v) for v in (after.origin if after is not None else s.grid.origin)),
                          positions=after.positions if after is not None else s.positions, options=o,
                          pixel_size_m=float(scan.object_pixel_size(s.size[0], o.fit)), held_out=held,
                          held_out_error_before=float(t.guard.start), held_out_error_after=float(error_after),
                          kept_epoch=int(kept_epoch), epochs_run=int(t.epochs_run),
                          verdict=said)
