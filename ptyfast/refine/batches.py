"""The order in which a refinement pass visits the scan positions, cut into the batches one engine step updates.

- ``random`` (default): a fresh permutation every pass, cut into consecutive batches of ``batch`` positions (1:
  the sequential textbook algorithm). Windows in one batch may overlap; their steps are averaged there
  (:mod:`ptyfast.refine.engines`), which slows convergence per pass as batches grow.
- ``disjoint``: every pass, the positions are greedily coloured in a random order so that no two windows of one
  colour overlap on the probe's support (|P|² ≥ 1 % of its maximum, the starting probe's); each colour is one
  batch, the colours in random order. Windows of one batch touch different object pixels, so updating them
  together is exactly updating them one after another: the sequential algorithm's progress per pass at a
  batched step's cost (many positions per FFT call, one scatter; what a GPU needs). ``batch`` then caps a batch's
  size, splitting a colour (default: no cap on a GPU, :data:`CPU_BATCH` on the CPU). The probe's step is the
  batched one (the average over the batch's windows).
"""

from __future__ import annotations

import numpy as np

from ptyfast.choices import Batching


class RandomBatches:
    """Consecutive slices of a fresh permutation of ``n`` positions."""

    def __init__(self, n: int, batch: int) -> None:
        self.n, self.batch = n, batch

    def batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        order = rng.permutation(self.n)
        return [order[s : s + self.batch] for s in range(0, self.n, self.batch)]


class DisjointBatches:
    """Batches of positions whose windows do not overlap on ``support`` (rows, cols of the probe's bright box).

    positions : (N, 2) float, (y, x) window corners in object pixels. ``cap``: largest batch (None: no cap).
    """

    def __init__(self, positions: np.ndarray, support: tuple[int, int], cap: int | None = None) -> None:
        from scipy.spatial import cKDTree

        pos = np.asarray(positions, np.float64)
        self.n, self.cap = len(pos), cap
        h, w = support
        pairs = (cKDTree(pos).query_pairs(r=float(max(h, w)), p=np.inf, output_type="ndarray") if self.n > 1
                 else np.zeros((0, 2), np.int64))
        d = np.abs(pos[pairs[:, 0]] - pos[pairs[:, 1]]) if len(pairs) else np.zeros((0, 2))
        pairs = pairs[(d[:, 0] < h) & (d[:, 1] < w)]
        both = np.concatenate([pairs, pairs[:, ::-1]]) if len(pairs) else np.zeros((0, 2), np.int64)
        both = both[np.argsort(both[:, 0], kind="stable")]
        self.starts = np.searchsorted(both[:, 0], np.arange(self.n + 1))
        self.neighbours = both[:, 1]

    def batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        colour = np.full(self.n, -1, np.int64)
        for i in rng.permutation(self.n):
            taken = colour[self.neighbours[self.starts[i] : self.starts[i + 1]]]
            free = np.ones(len(taken) + 1, bool)
            free[taken[(taken >= 0) & (taken <= len(taken))]] = False
            colour[i] = int(np.argmax(free))  # the smallest colour no overlapping neighbour has
        order = rng.permutation(int(colour.max()) + 1)
        groups = [np.flatnonzero(colour == c) for c in order]
        if self.cap is None:
            return groups
        return [g[s : s + self.cap] for g in groups for s in range(0, len(g), self.cap)]


def probe_support(probe: np.ndarray, fraction: float = 1e-2) -> tuple[int, int]:
    """(rows, cols) of the box holding the probe's pixels with |P|² ≥ ``fraction`` of its maximum (all modes)."""
    from ptyfast.runtime.phase_align import support_box

    p2 = np.abs(np.asarray(probe)) ** 2
    if p2.ndim == 3:
        p2 = p2.sum(axis=0)
    ys, xs = support_box(p2, fraction)
    return ys.stop - ys.start, xs.stop - xs.start


#: Largest disjoint batch on the CPU when none is given: numpy works best on a few frames at a time (1,600-frame
#: scan, held probe: 1.4–1.5 s per pass at 16 against 1.9–2.4 s sequential and 2.8 s uncapped, batches of ≈ 130).
CPU_BATCH = 16


def make_batches(batching: str, positions: np.ndarray, probe, batch: int | None, *, on_gpu: bool = False):
    """The batcher of ``batching`` (see the module docstring) for a scan's ``positions`` and starting ``probe``;
    disjoint batches are capped at ``batch``, else at :data:`CPU_BATCH` off the GPU."""
    if batching == Batching.DISJOINT:
        cap = batch if batch is not None else (None if on_gpu else CPU_BATCH)
        return DisjointBatches(positions, probe_support(probe), cap=cap)
    return RandomBatches(len(positions), batch or 1)


__all__ = ["CPU_BATCH", "DisjointBatches", "RandomBatches", "make_batches", "probe_support"]
