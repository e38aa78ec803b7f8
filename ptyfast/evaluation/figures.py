"""Figures of reconstructions beside the truth (demo, release check): shared colour limits, so a flat output
looks flat."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def comparison_figure(path: Path, objects: dict[str, np.ndarray], truth_grid: np.ndarray, region: np.ndarray,
                      title: str) -> Path:
    """Truth beside each named reconstruction (phase with the offset removed, and amplitude) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ptyfast.metrics import aligned_phase, bounding_box
    from ptyfast.runtime.output import _savefig

    box = bounding_box(region)
    t, sel = truth_grid[box], region[box]
    cols = [("truth", np.angle(t), np.abs(t))]
    cols += [(name, aligned_phase(o[box], t, sel), np.abs(o[box])) for name, o in objects.items()]
    fig, axes = plt.subplots(2, len(cols), figsize=(4.2 * len(cols), 8.4), dpi=100, squeeze=False)
    for row, (label, cmap, ref) in enumerate((("phase (rad)", "viridis", np.angle(t)),
                                              ("amplitude", "gray", np.abs(t)))):
        lo, hi = np.percentile(ref, [0.5, 99.5])
        for col, (name, phase, amp) in enumerate(cols):
            im = axes[row, col].imshow(phase if row == 0 else amp, cmap=cmap, vmin=lo, vmax=hi)
            axes[row, col].set_title(f"{name}\n{label}", fontsize=9)
            axes[row, col].axis("off")
        fig.colorbar(im, ax=axes[row, :].tolist(), shrink=0.8)
    fig.suptitle(title)
    out = _savefig(fig, path)
    plt.close(fig)
    return out
