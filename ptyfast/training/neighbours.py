"""Neighbour-conditioned training data and network: the centre pattern's input plus, for K overlapping
neighbour windows of the same scan, their one-step physics estimates and probe footprints registered onto
the centre window.

One far-field pattern leaves the phase ambiguous for some probes (the twin image); ptychography resolves it
through the overlap of neighbouring windows. This module gives a network that overlap as input channels:

- :class:`NeighbourSampler`: :class:`~ptyfast.training.data.PatternSampler` batches with K neighbour windows per
  sample (scan-like offsets: step 20–44 px, a random base angle, K directions 2π/K apart, ±2 px jitter), each
  simulated through the same code path as the centre (same probe, second mode, photons and noise choice).
- :class:`PtyNetSNeighbours` and :func:`neighbours_from_shipped`: ``ptynet-s-probe-est`` with a wider first conv,
  started from the shipped weights (the new channels' weights zero: at step 0 it computes what the shipped
  model does).
- :func:`scan_neighbour_channels`: the same channels for a measured scan, from its positions.

Conventions: arrays are (…, H, W) with axis order (y, x); positions and offsets are (y, x) in object pixels;
a window at corner p covers object pixels p … p + (H, W) − 1. A neighbour at offset d = p_k − p shows object
pixel p + d + (i, j) at its pixel (i, j), i.e. at pixel (i + dy, j + dx) of the centre window, so its channels
are translated by round(d) (:func:`translate`), zero where the neighbour's window does not cover the centre's.

Input layout (B, 5 + 3K, H, W) float32: the centre's 5 channels exactly as
:func:`ptyfast.models.preprocess.preprocess` makes them with ``conditioning="probe+estimate"`` (√(I / mean|P|²),
Re P, Im P with max |P| = 1, Re, Im of :func:`~ptyfast.models.preprocess.estimate_channels`), then per
neighbour k (slot k = direction sector k, see :func:`sector_of`): Re, Im of its estimate and |P| / max|P|,
all registered onto the centre window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from ptyfast.errors import InputError
from ptyfast.models.preprocess import estimate_channels
from ptyfast.models.ptynet_s import StandardisedHeads, _PtyNetSLayers
from ptyfast.training.data import DataOptions, Draw, PatternSampler

#: Neighbours per sample.
K = 4
#: Scan step range (pixels) of the simulated neighbours and the jitter per coordinate (± pixels).
STEP = (20.0, 44.0)
JITTER = 2.0
#: Channels per neighbour: Re, Im of its estimate; its probe amplitude |P| / max|P|.
PER_NEIGHBOUR = 3
CENTRE_CHANNELS = 5

__all__ = ["K", "NeighbourDraw", "NeighbourSampler", "PtyNetSNeighbours", "choose_neighbours", "draw_offsets",
           "neighbour_channels", "neighbours_from_shipped", "scan_neighbour_channels", "sector_of", "translate"]


def sector_of(offsets: np.ndarray, k: int = K) -> np.ndarray:
    """Direction slot of (…, 2) (dy, dx) offsets: sector q covers angles atan2(dy, dx) in
    [q·2π/k − π/k, q·2π/k + π/k); for k = 4: 0 = +x (right), 1 = +y (down), 2 = −x, 3 = −y."""
    angle = np.arctan2(offsets[..., 0], offsets[..., 1])
    width = 2 * math.pi / k
    return (np.floor(np.mod(angle + width / 2, 2 * math.pi) / width).astype(np.int64)) % k


def draw_offsets(batch: int, rng: np.random.Generator, k: int = K, step=STEP, jitter: float = JITTER) -> np.ndarray:
    """(batch, k, 2) float64 (dy, dx) neighbour offsets in pixels, like a real scan's neighbourhood: one step
    s ~ U(step) per sample, base angle θ0 ~ U[−π/k, π/k), offsets s·(sin, cos)(θ0 + q·2π/k) (for k = 4: a raster
    at any rotation, or a spiral's four nearest) plus U(±jitter) per coordinate. Slot q lies in sector q
    (:func:`sector_of`) up to the jitter."""
    s = rng.uniform(step[0], step[1], size=(batch, 1))
    theta = rng.uniform(-math.pi / k, math.pi / k, size=(batch, 1)) + np.arange(k) * (2 * math.pi / k)
    d = s[..., None] * np.stack([np.sin(theta), np.cos(theta)], axis=-1)
    return d + rng.uniform(-jitter, jitter, size=d.shape)


def translate(channels: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Channels (N, C, H, W) moved by integer (N, 2) (dy, dx) shifts: ``out[n, :, y, x] = channels[n, :, y − dy,
    x − dx]``, zero where that falls outside the window (a neighbour's channels in the centre's coordinates)."""
    out = np.zeros_like(channels)
    h, w = channels.shape[-2:]
    for n, (dy, dx) in enumerate(np.asarray(shifts, np.int64)):
        if abs(dy) >= h or abs(dx) >= w:
            continue
        out[n, :, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = \
            channels[n, :, max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out


def neighbour_channels(x: np.ndarray) -> np.ndarray:
    """(N, 3, H, W): Re, Im of the estimate and |P| / max|P| from a neighbour's own (N, 5, H, W)
    ``probe+estimate`` input (channels 3, 4 and the modulus of 1, 2), not yet registered."""
    return np.stack([x[:, 3], x[:, 4], np.hypot(x[:, 1], x[:, 2])], axis=1).astype(np.float32)


@dataclass
class NeighbourDraw(Draw):
    """A :class:`Draw` plus (B, K, 2) float64 (dy, dx) neighbour offsets (pixels) and the seed of the neighbours'
    Poisson noise (its own generator, so the centre's data do not depend on whether neighbours are rendered)."""

    offsets: np.ndarray = None
    noise_seed: int = 0


class NeighbourSampler(PatternSampler):
    """:class:`PatternSampler` whose samples carry K neighbour windows: x (B, 5 + 3K, H, W) float32 (layout in
    the module docstring), amplitude, phase, lit mask (B, H, W) of the centre window.

    Every neighbour uses its centre's probe (both modes), photons per frame and noise choice, and is rendered by
    :meth:`PatternSampler.render` itself (so by the project's forward model and preprocessing). Centre corners
    are drawn uniformly with a margin of the largest offset, so every neighbour lies inside its pool object.

    ``centre_only``: return the centre's 5 channels only (the same random stream and the same centre data as
    with neighbours: the baseline of an ablation at equal data)."""

    def __init__(self, pool: list[np.ndarray], probe: np.ndarray, options: DataOptions, rng, probe_seed=None, *,
                 neighbours: int = K, step=STEP, jitter: float = JITTER, centre_only: bool = False) -> None:
        if options.conditioning != "probe+estimate":
            options = replace(options, conditioning="probe+estimate")
        super().__init__(pool, probe, options, rng, probe_seed=probe_seed)
        self.neighbours, self.step, self.jitter, self.centre_only = neighbours, tuple(step), jitter, centre_only
        self.margin = int(math.ceil(step[1] + jitter))
        h, w = probe.shape
        small = min(min(o.shape[0] - h, o.shape[1] - w) for o in pool)
        if small - 1 <= 2 * self.margin:
            raise InputError(f"pool objects must exceed the window by more than {2 * self.margin + 1} px to hold "
                             f"neighbours up to {self.margin} px away; the smallest exceeds it by {small}.")

    @property
    def channels(self) -> int:
        return CENTRE_CHANNELS + (0 if self.centre_only else PER_NEIGHBOUR * self.neighbours)

    def draw(self, batch: int) -> NeighbourDraw:
        """:meth:`PatternSampler.draw` with the corners mapped into the margin, then the offsets and noise seed."""
        d = super().draw(batch)
        h, w = self.probes[0].shape
        m = self.margin
        for j, i in enumerate(d.objects):  # U(0, R) → U(m, R − m): still uniform, same random numbers
            full = np.array([self.pool[i].shape[0] - h - 1, self.pool[i].shape[1] - w - 1], np.float64)
            d.positions[j] = m + d.positions[j] * (full - 2 * m) / full
        offsets = draw_offsets(batch, self.rng, self.neighbours, self.step, self.jitter)
        seed = int(self.rng.integers(2**63 - 1))
        return NeighbourDraw(**{f.name: getattr(d, f.name) for f in fields(Draw)}, offsets=offsets, noise_seed=seed)

    def render(self, d: NeighbourDraw):
        x, amp, pha, mask = super().render(d)
        if self.centre_only:
            return x, amp, pha, mask
        b, k = len(d.objects), self.neighbours
        rep = lambda a: np.repeat(np.asarray(a), k, axis=0)  # noqa: E731
        around = Draw(rep(d.probe), rep(d.objects), (d.positions[:, None, :] + d.offsets).reshape(-1, 2),
                      rep(d.photons), rep(d.noisy), rep(d.power))
        own, self.rng = self.rng, np.random.default_rng(d.noise_seed)
        try:
            xn = PatternSampler.render(self, around)[0]
        finally:
            self.rng = own
        h, w = x.shape[-2:]
        reg = translate(neighbour_channels(xn), np.rint(d.offsets).reshape(-1, 2))
        return np.concatenate([x, reg.reshape(b, k * PER_NEIGHBOUR, h, w)], axis=1), amp, pha, mask


def choose_neighbours(positions: np.ndarray, k: int = K, candidates: int = 12) -> np.ndarray:
    """(N, k) int64: for every scan position (N, 2) (y, x), its neighbour in each direction slot q
    (:func:`sector_of` of the offset), the nearest in that sector among the ``candidates`` nearest positions;
    a slot whose sector is empty takes the nearest candidate not yet chosen; −1 where none is left."""
    from scipy.spatial import cKDTree

    positions = np.asarray(positions, np.float64)
    n = len(positions)
    out = np.full((n, k), -1, np.int64)
    if n < 2:
        return out
    _, nn = cKDTree(positions).query(positions, k=min(candidates + 1, n))
    for i in range(n):
        cand = [j for j in np.atleast_1d(nn[i]) if j != i and j < n]
        sectors = sector_of(positions[cand] - positions[i], k) if cand else []
        used: set[int] = set()
        for q in range(k):
            for j, s in zip(cand, sectors):
                if s == q and j not in used:
                    out[i, q] = j
                    used.add(j)
                    break
        for q in np.flatnonzero(out[i] < 0):
            rest = [j for j in cand if j not in used]
            if rest:
                out[i, q] = rest[0]
                used.add(rest[0])
    return out


def scan_neighbour_channels(positions: np.ndarray, intensities: np.ndarray, probe: np.ndarray, photons=None, *,
                            k: int = K, indices: np.ndarray | None = None, estimates: np.ndarray | None = None,
                            candidates: int = 12) -> np.ndarray:
    """The registered neighbour channels (M, 3k, H, W) float32 of a measured scan, as
    :class:`NeighbourSampler` makes them, for the frames ``indices`` (default all, M = N).

    ``positions`` (N, 2) (y, x) window corners in object pixels; ``intensities`` (N, H, W) in photons;
    ``probe`` (H, W) complex; ``photons`` per frame (default Σ|P|², what ``preprocess`` uses for a scan);
    ``estimates``: the frames' :func:`estimate_channels` (N, 2, H, W) if already computed (each frame's is
    needed once, whichever frames it is a neighbour of). Neighbours from :func:`choose_neighbours`; a missing
    one (−1) leaves its three channels zero. Concatenate after the centre's 5 channels for
    :class:`PtyNetSNeighbours`."""
    probe = np.asarray(probe, np.complex64)
    positions = np.asarray(positions, np.float64)
    n = len(positions)
    if photons is None:
        photons = float(np.sum(np.abs(probe) ** 2))
    if estimates is None:
        counts = np.maximum(np.asarray(intensities), 0, dtype=np.float32)
        estimates = estimate_channels(counts, probe, np.broadcast_to(np.asarray(photons, np.float64), (n,)))
    indices = np.arange(n) if indices is None else np.asarray(indices)
    chosen = choose_neighbours(positions, k, candidates)[indices]  # (M, k)
    amp = np.abs(probe) / max(float(np.abs(probe).max()), 1e-30)
    h, w = probe.shape
    out = np.zeros((len(indices), k * PER_NEIGHBOUR, h, w), np.float32)
    for q in range(k):
        have = np.flatnonzero(chosen[:, q] >= 0)
        if not len(have):
            continue
        j = chosen[have, q]
        ch = np.concatenate([estimates[j], np.broadcast_to(amp, (len(j), 1, h, w))], axis=1).astype(np.float32)
        shift = np.rint(positions[j] - positions[indices[have]])
        out[have, q * PER_NEIGHBOUR : (q + 1) * PER_NEIGHBOUR] = translate(ch, shift)
    return out


class PtyNetSNeighbours(_PtyNetSLayers):
    """``ptynet-s-probe-est`` with ``5 + 3·neighbours`` input channels (BatchNorm, standardised heads): input
    (B, 5 + 3K, H, W) as :class:`NeighbourSampler` / :func:`scan_neighbour_channels` make it; output amplitude,
    phase (B, H, W) of the centre window. Only the first conv grows."""

    CONDITIONING = "probe+estimate"  # the centre's channels; the neighbours' follow (this module)

    def __init__(self, neighbours: int = K) -> None:
        super().__init__(norm=True, heads=StandardisedHeads(), in_channels=CENTRE_CHANNELS + PER_NEIGHBOUR * neighbours)
        self.neighbours = neighbours


def shipped_probe_est_path() -> Path:
    """The shipped ``ptynet-s-probe-est`` weights."""
    import ptyfast.data

    return Path(ptyfast.data.__file__).resolve().parent / "ptynet-s-probe-est.pt"


def neighbours_from_shipped(path: str | Path | None = None, neighbours: int = K) -> PtyNetSNeighbours:
    """:class:`PtyNetSNeighbours` started from ``ptynet-s-probe-est`` weights (default the shipped ones) by
    :func:`ptyfast.training.heads.widen_input`: the neighbour channels' first-conv weights are zero, so it
    computes exactly what the 5-channel model computes on the centre channels until trained."""
    from ptyfast.models.checkpoint import read_checkpoint
    from ptyfast.training.heads import widen_input

    model = PtyNetSNeighbours(neighbours)
    state = read_checkpoint(path or shipped_probe_est_path())["state_dict"]
    model.load_state_dict(widen_input(state, model))
    return model
