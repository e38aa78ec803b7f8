"""Bin index of patch positions for the deterministic overlap-add kernel (numpy, host side).

``overlap_add.cu`` gives one thread per accumulator pixel; the thread finds the patches whose
bilinear footprint (H+1, W+1) covers its pixel through this index: the patches sorted by the bin of
their integer corner ``(floor(y), floor(x))`` on a grid of ``bsy × bsx`` bins, in CSR form. Only
patches whose footprint meets the accumulator are binned. Pure numpy: positions are small (N × 16
bytes), and the same index drives the CPU emulation of the kernel in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BinIndex:
    """CSR bin index; field meanings as in the ``overlap_add.cu`` header.

    Attributes
    ----------
    bin_start : (nby * nbx + 1,) int32 offsets into ``bin_items``
    bin_items : (M,) int32 patch indices (M ≤ N visible patches), sorted by bin, ascending inside a bin
    by0, bx0 : int, integer corner of bin (0, 0)
    bsy, bsx : int, bin size in pixels
    nby, nbx : int, number of bins
    r0, c0, nr, nc : int, rectangle of the accumulator touched by the footprints (clipped)
    """

    bin_start: np.ndarray
    bin_items: np.ndarray
    by0: int
    bx0: int
    bsy: int
    bsx: int
    nby: int
    nbx: int
    r0: int
    c0: int
    nr: int
    nc: int

    @property
    def empty(self) -> bool:
        return self.bin_items.size == 0 or self.nr <= 0 or self.nc <= 0


def bin_positions(positions, patch_shape, accum_shape, *, bin_size=None) -> BinIndex:
    """Build the bin index for ``overlap_add_c64``.

    Parameters
    ----------
    positions : (N, 2) float (y, x) top-left corners, host array
    patch_shape : (H, W)
    accum_shape : (rows, cols)
    bin_size : None or (bsy, bsx); default (max(1, H//2), max(1, W//2)): a pixel then checks at most
        3 × 3 bins, about 9/4 × the patches that actually cover it

    Returns
    -------
    BinIndex
    """
    h, w = (int(v) for v in patch_shape)
    rows, cols = (int(v) for v in accum_shape)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    base = np.floor(pos)
    vis = (base[:, 0] > -h - 1) & (base[:, 0] < rows) & (base[:, 1] > -w - 1) & (base[:, 1] < cols)
    idx = np.flatnonzero(vis)
    bsy, bsx = bin_size if bin_size is not None else (max(1, h // 2), max(1, w // 2))
    if idx.size == 0:
        return BinIndex(np.zeros(2, np.int32), np.zeros(0, np.int32), 0, 0, bsy, bsx, 1, 1, 0, 0, 0, 0)
    b = base[idx].astype(np.int64)
    by0, bx0 = int(b[:, 0].min()), int(b[:, 1].min())
    nby = int((b[:, 0].max() - by0) // bsy) + 1
    nbx = int((b[:, 1].max() - bx0) // bsx) + 1
    key = ((b[:, 0] - by0) // bsy) * nbx + (b[:, 1] - bx0) // bsx
    order = np.argsort(key, kind="stable")
    counts = np.bincount(key, minlength=nby * nbx)
    bin_start = np.zeros(nby * nbx + 1, np.int32)
    np.cumsum(counts, out=bin_start[1:])
    r0, c0 = max(by0, 0), max(bx0, 0)
    r1 = min(int(b[:, 0].max()) + h + 1, rows)
    c1 = min(int(b[:, 1].max()) + w + 1, cols)
    return BinIndex(bin_start, idx[order].astype(np.int32), by0, bx0, bsy, bsx, nby, nbx, r0, c0, r1 - r0, c1 - c0)
