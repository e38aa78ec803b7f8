"""Scan paths. Positions are (N, 2) float64 (y, x) of the probe window's top-left corner in object pixels."""

from __future__ import annotations

import numpy as np

from ptyfast.errors import InputError


def overlap_to_step(overlap: float, window: int) -> int:
    """Linear overlap fraction → raster step in pixels: round(window · (1 − overlap)).

    For 128-px windows: 0.75 → 32, 0.5 → 64, 0.25 → 96, 0 → 128 (the seed paper's steps).
    """
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap must be in [0, 1) (a fraction, e.g. 0.5 for 50 %); found {overlap}.")
    return max(1, int(round(window * (1.0 - overlap))))


def _jitter(n: int, jitter: float, rng) -> np.ndarray:
    if jitter < 0:
        raise InputError(f"jitter must be ≥ 0 pixels; found {jitter}.")
    rng = np.random.default_rng(rng)
    return rng.uniform(-jitter, jitter, size=(n, 2)) if jitter > 0 else np.zeros((n, 2))


def _extent(object_shape: tuple[int, int], window: tuple[int, int]) -> tuple[int, int]:
    """Largest top-left (y, x) that keeps the window plus one bilinear pixel inside the object."""
    (rows, cols), (h, w) = object_shape, window
    if rows < h + 1 or cols < w + 1:
        raise InputError(f"the object {object_shape} must be larger than the probe window {window}.")
    return rows - h - 1, cols - w - 1


def raster_positions(
    object_shape: tuple[int, int],
    window: tuple[int, int],
    *,
    overlap: float = 0.5,
    jitter: float = 0.0,
    rng=None,
) -> np.ndarray:
    """Raster grid covering ``object_shape`` with windows of ``window`` at the given linear overlap.

    Each position gets independent uniform jitter in [-jitter, +jitter] per axis, then is clipped so the
    window (plus one pixel for bilinear sampling) stays inside the object.
    """
    ly, lx = _extent(object_shape, window)
    sy, sx = overlap_to_step(overlap, window[0]), overlap_to_step(overlap, window[1])
    ys = np.arange(0, ly + 1e-9, sy)
    xs = np.arange(0, lx + 1e-9, sx)
    grid = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2).astype(np.float64)
    grid += _jitter(len(grid), jitter, rng)
    return np.clip(grid, 0, [ly, lx])


def fermat_positions(
    object_shape: tuple[int, int],
    window: tuple[int, int],
    *,
    overlap: float = 0.5,
    jitter: float = 0.0,
    rng=None,
) -> np.ndarray:
    """Fermat spiral (golden-angle) covering ``object_shape``; mean nearest-neighbour spacing ≈ raster step.

    Point k sits at radius c·√k, angle k·137.508°; c is chosen so each point owns an area of step².
    """
    ly, lx = _extent(object_shape, window)
    step = overlap_to_step(overlap, min(window))
    c = step / np.sqrt(np.pi)
    cy, cx = ly / 2, lx / 2
    radius = np.hypot(cy, cx)
    n = int((radius / c) ** 2) + 1
    k = np.arange(n)
    r = c * np.sqrt(k)
    theta = k * np.deg2rad(137.50776405)
    pts = np.stack([cy + r * np.sin(theta), cx + r * np.cos(theta)], axis=1)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] <= ly) & (pts[:, 1] >= 0) & (pts[:, 1] <= lx)
    pts = pts[inside] + _jitter(int(inside.sum()), jitter, rng)
    return np.clip(pts, 0, [ly, lx])


#: A raster whose positions deviate from their lattice by less than this fraction of the step (rms) is
#: regular enough for the raster-grid pathology (Thibault et al., Ultramicroscopy 109, 338 (2009)): a refined
#: probe can absorb the lattice's periodicity, since the data cannot tell it from the object's.
RASTER_REGULARITY = 0.1


def raster_lattice(positions: np.ndarray) -> dict | None:
    """The regular lattice ``positions`` (N, 2) (y, x) lie on, or None when they lie on none (a spiral, random
    points, fewer than 9 positions): the step (y, x) in pixels, rows × columns, and the rms deviation from
    the lattice as a fraction of the smaller step (``jitter``; see :data:`RASTER_REGULARITY`).

    Coordinates along each axis are grouped where sorted values are closer than a third of the median
    nearest-neighbour distance; a lattice has at least two groups per axis, equal spacing between group
    centres (within 10 %), and about one position per row × column."""
    from scipy.spatial import cKDTree

    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or len(pos) < 9 or not np.all(np.isfinite(pos)):
        return None
    nn = float(np.median(cKDTree(pos).query(pos, k=2)[0][:, 1]))
    if nn <= 0:
        return None
    steps, residuals, counts = [], [], []
    for axis in (0, 1):
        v = pos[:, axis]
        order = np.argsort(v)
        group = np.concatenate([[0], np.cumsum(np.diff(v[order]) > nn / 3)])
        centres = np.bincount(group, weights=v[order]) / np.bincount(group)
        if len(centres) < 2:
            return None
        gaps = np.diff(centres)
        if np.std(gaps) > 0.1 * np.mean(gaps):
            return None
        steps.append(float(np.mean(gaps)))
        residuals.append(v[order] - centres[group])
        counts.append(len(centres))
    if counts[0] * counts[1] > 1.5 * len(pos):
        return None
    jitter = float(np.sqrt(np.mean(np.concatenate(residuals) ** 2)) / min(steps))
    return {"step": (steps[0], steps[1]), "rows": counts[0], "cols": counts[1], "jitter": jitter}
