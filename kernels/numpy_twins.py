"""numpy twins of the CUDA kernels: same signatures and semantics, used on the CPU path.

Sub-pixel convention (gather and overlap_add are adjoint to each other):
a window at (y, x) = (y0 + fy, x0 + fx), y0 = floor(y), samples the object bilinearly,

    patch[i, j] = (1-fy)(1-fx) O[y0+i, x0+j] + (1-fy) fx O[y0+i, x0+j+1]
                + fy (1-fx) O[y0+i+1, x0+j] + fy fx O[y0+i+1, x0+j+1],

and object pixels outside the grid read as zero (writes there are dropped).
"""

from __future__ import annotations

import numpy as np


def _split(positions):
    pos = np.asarray(positions, dtype=np.float64)
    base = np.floor(pos).astype(np.int64)
    frac = (pos - base).astype(np.float32)
    return base, frac


def gather(obj, positions, shape):
    """Extract patches (N, H, W) of ``obj`` at sub-pixel (y, x) ``positions`` (bilinear, zero outside)."""
    h, w = shape
    base, frac = _split(positions)
    rows = base[:, 0, None] + np.arange(h + 1)  # (N, H+1)
    cols = base[:, 1, None] + np.arange(w + 1)  # (N, W+1)
    rv = (rows >= 0) & (rows < obj.shape[0])
    cv = (cols >= 0) & (cols < obj.shape[1])
    win = obj[np.clip(rows, 0, obj.shape[0] - 1)[:, :, None], np.clip(cols, 0, obj.shape[1] - 1)[:, None, :]]
    win = win * (rv[:, :, None] & cv[:, None, :])
    fy = frac[:, 0, None, None]
    fx = frac[:, 1, None, None]
    top = (1 - fx) * win[:, :h, :w] + fx * win[:, :h, 1:]
    bottom = (1 - fx) * win[:, 1:, :w] + fx * win[:, 1:, 1:]
    return ((1 - fy) * top + fy * bottom).astype(obj.dtype, copy=False)


def spread(patches, positions):
    """Bilinear footprint of each patch on the integer grid: (N, H+1, W+1), adjoint of the interpolation."""
    n, h, w = patches.shape
    _, frac = _split(positions)
    fy = frac[:, 0, None, None]
    fx = frac[:, 1, None, None]
    out = np.zeros((n, h + 1, w + 1), dtype=patches.dtype)
    out[:, :h, :w] += (1 - fy) * (1 - fx) * patches
    out[:, :h, 1:] += (1 - fy) * fx * patches
    out[:, 1:, :w] += fy * (1 - fx) * patches
    out[:, 1:, 1:] += fy * fx * patches
    return out


def overlap_add(accum, patches, positions):
    """Scatter-add ``patches`` (N, H, W) into ``accum`` (rows, cols) in place; the adjoint of gather.

    Deterministic (patches are added in order). Writes outside ``accum`` are dropped.
    """
    base, _ = _split(positions)
    fp = spread(patches, positions)
    rows, cols = accum.shape
    hh, ww = fp.shape[1:]
    for (y0, x0), tile in zip(base, fp):
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y0 + hh, rows), min(x0 + ww, cols)
        if ye <= ys or xe <= xs:
            continue
        accum[ys:ye, xs:xe] += tile[ys - y0 : ye - y0, xs - x0 : xe - x0]
    return accum
