"""Probe handling of a refinement: mixed-state (incoherent-mode) probes and the probe trial that keeps a probe
update only when it lowers the data error."""

from __future__ import annotations

import math
import time

import numpy as np

from ptyfast.errors import InputError
from ptyfast.refine.start import _to_numpy

NEW_MODE_SHARE = 0.05  #: each added probe mode starts with this share of the probe's power


def mixed_state(probe, modes: int) -> np.ndarray:
    """A probe of ``modes`` incoherent modes (modes, H, W) from ``probe`` (H, W) or (k, H, W): the strongest
    ``modes`` of those given, and for each one missing the first mode times a phase ramp of k cycles across
    the window (its far field shifted by k pixels, alternating axes and signs: orthogonal to the first and
    to each other) with :data:`NEW_MODE_SHARE` of the power; the total power is that of the given probe."""
    if int(modes) < 1:
        raise InputError(f"probe modes must be ≥ 1; found {modes}.")
    p = np.asarray(_to_numpy(probe), np.complex64)
    p = p.reshape(-1, *p.shape[-2:])
    power = np.sum(np.abs(p) ** 2, axis=(1, 2))
    p = p[np.argsort(power)[::-1][: int(modes)]]
    total = float(power.sum())
    h, w = p.shape[-2:]
    yy, xx = np.mgrid[:h, :w]
    extra = []
    for k in range(len(p), int(modes)):
        cycles = (k + 1) // 2 * (1 if k % 2 else -1)
        ramp = np.exp(2j * np.pi * cycles * (xx / w if (k // 2) % 2 == 0 else yy / h))
        extra.append(p[0] * ramp * np.sqrt(NEW_MODE_SHARE))
    out = np.concatenate([p, np.asarray(extra, np.complex64).reshape(-1, h, w)]) if extra else p
    out *= np.sqrt(total / float(np.sum(np.abs(out) ** 2)))
    return out[0] if len(out) == 1 else out.astype(np.complex64)


#: Iterations of the probe trial (:func:`refine`'s ``probe_trial``): from the first probe-update iteration the
#: same iterations run twice, probe updated and probe held, and the run goes on with the lower error.
PROBE_TRIAL = 10


def _probe_trial(engine, rng, batcher, k: int, total: float, power: float):
    """``k`` iterations from the engine's current state twice — probe updated, probe held — with the same
    position orders; the engine is left in the state of the branch whose last error is lower (held on a
    tie or a non-finite update). Returns (kept, its errors, its seconds per iteration, last error updated,
    last error held)."""
    start_obj, start_probe = engine.obj.copy(), engine.probe.copy()
    state = rng.bit_generator.state
    runs = {}
    for branch in ("updated", "held"):
        rng.bit_generator.state = state
        engine.obj[...], engine.probe[...] = start_obj, start_probe
        errs, secs = [], []
        for _ in range(k):
            t0 = time.perf_counter()
            err = 0.0
            for idx in batcher.batches(rng):
                err = err + engine.step(idx, branch == "updated")
            if branch == "updated":
                engine.fix_probe_power(power)
            errs.append(float(err) / total)
            secs.append(time.perf_counter() - t0)
        runs[branch] = (errs, secs, engine.obj.copy(), engine.probe.copy())
    e_up, e_held = runs["updated"][0][-1], runs["held"][0][-1]
    kept = "updated" if math.isfinite(e_up) and e_up < e_held else "held"
    errs, secs, obj, probe = runs[kept]
    engine.obj[...], engine.probe[...] = obj, probe
    return kept, errs, secs, e_up, e_held

