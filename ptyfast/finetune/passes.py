"""The passes of one fine-tuning run over its training frames: the pre-trained network's (anchors, the
predictions the amplitude scale is fitted to), one optimisation epoch, and the fine-tuned network's (its R-factor).
The method they implement is described in :mod:`ptyfast.finetune.loop`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ptyfast.finetune.network import Network
from ptyfast.finetune.options import FinetuneOptions

__all__ = ["Run", "final_pass", "initial_pass", "train_epoch"]


@dataclass
class Run:
    """What every pass of one fine-tuning run shares: the network, the selected frames (network input ``x``,
    measured amplitudes ``meas``, both on the CPU), the data term, the probe (on the device, updated in place
    when it is learned) and its normalised intensity ``weight``, the windows on the object grid, and for
    ``--objective overlap`` the stitched object."""

    options: FinetuneOptions
    net: Network
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


def initial_pass(run: Run):
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


def train_epoch(run: Run, opt, order, log_scale, anchors, targets) -> tuple[float, float]:
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


def final_pass(run: Run, scale: float) -> float:
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
