"""Differentiable stitching in torch: the overlap-consistent object behind ``--objective overlap``.

Same conventions as the kernels (:mod:`ptyfast.kernels`, numpy twins): positions are (N, 2) (y, x)
top-left corners in object pixels, sub-pixel allowed; a window at ``(y0 + fy, x0 + fx)`` samples the object
bilinearly (gather) and spreads onto it with the adjoint weights (overlap-add). The stitched object is
``O = Σ_n w·p_n / max(Σ_n w, floor·max Σ w)`` with ``w = |P|²`` (what ``reconstruct`` writes).

:class:`Footprints` precomputes, once per scan, the flat object index and the four bilinear weights of
every window pixel, so each optimiser step costs one ``index_add_`` and one ``take`` per batch.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["Footprints"]


class Footprints:
    """Index tables of the windows of one scan on its object grid.

    Parameters
    ----------
    positions : (N, 2) float (y, x), every window (plus its one-pixel bilinear margin) inside
        ``object_shape``.
    window : (H, W) patch shape.
    object_shape : (rows, cols).
    device : torch device of the tables.
    """

    def __init__(self, positions: np.ndarray, window: tuple[int, int], object_shape: tuple[int, int],
                 device="cpu") -> None:
        pos = np.asarray(positions, np.float64)
        base = np.floor(pos).astype(np.int64)
        frac = (pos - base).astype(np.float32)
        h, w = window
        rows, cols = object_shape
        if base.min() < 0 or np.any(base[:, 0] + h + 1 > rows) or np.any(base[:, 1] + w + 1 > cols):
            raise ValueError("a window lies outside the object grid")
        r = base[:, 0, None, None] + np.arange(h + 1)[None, :, None]
        c = base[:, 1, None, None] + np.arange(w + 1)[None, None, :]
        self.index = torch.from_numpy((r * cols + c).reshape(len(pos), -1)).to(device)  # (N, (H+1)(W+1))
        self.frac = torch.from_numpy(frac).to(device)  # (N, 2)
        self.window = (h, w)
        self.object_shape = (rows, cols)

    def spread(self, patches: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Bilinear footprints (B, H+1, W+1) of ``patches`` (B, H, W) at the windows ``idx``."""
        fy = self.frac[idx, 0, None, None]
        fx = self.frac[idx, 1, None, None]
        # x first, then y: (B, H, W) → (B, H, W+1) → (B, H+1, W+1); F.pad keeps autograd simple.
        t = torch.nn.functional.pad(patches * (1 - fx), (0, 1)) + torch.nn.functional.pad(patches * fx, (1, 0))
        return torch.nn.functional.pad(t * (1 - fy), (0, 0, 0, 1)) + torch.nn.functional.pad(t * fy, (0, 0, 1, 0))

    def add(self, accum: torch.Tensor, patches: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``accum`` (rows·cols,) plus the footprints of ``patches`` at windows ``idx`` (out of place)."""
        return accum.index_add(0, self.index[idx].reshape(-1), self.spread(patches, idx).reshape(-1))

    def gather(self, obj_flat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Bilinear windows (B, H, W) of the flat object ``obj_flat`` (rows·cols,) at windows ``idx``."""
        h, w = self.window
        win = obj_flat[self.index[idx]].reshape(len(idx), h + 1, w + 1)
        fy = self.frac[idx, 0, None, None]
        fx = self.frac[idx, 1, None, None]
        top = (1 - fx) * win[:, :h, :w] + fx * win[:, :h, 1:]
        bottom = (1 - fx) * win[:, 1:, :w] + fx * win[:, 1:, 1:]
        return (1 - fy) * top + fy * bottom
