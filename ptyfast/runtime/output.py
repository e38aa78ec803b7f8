"""Reconstruction output: one HDF5 file (written atomically) and PNG previews.

HDF5 layout (root):
    object (complex64, rows×cols), amplitude, phase (float32, radians), weight (stitching weight map),
    positions (N, 2) (y, x) on the object grid, origin (2,) scan coordinates of grid pixel (0, 0),
    probe (complex64, H×W) when known,
    consistency/per_frame (N,) normalised error per frame, attrs error, scale,
    attrs: ptyfast_version, provenance (JSON: model manifest + sha256, backend, precision, device,
    input file, timings per stage, command options).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from ptyfast import __version__
from ptyfast.errors import InputError
from ptyfast.io.atomic import atomic_path, json_default, save_figure


def write_reconstruction(path: str | Path, rec, provenance: dict) -> Path:
    """Write ``rec`` (a :class:`~ptyfast.runtime.pipeline.Reconstruction`) to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("object", data=rec.object.astype(np.complex64), compression="gzip", compression_opts=1)
            f.create_dataset("amplitude", data=np.abs(rec.object).astype(np.float32))
            f.create_dataset("phase", data=np.angle(rec.object).astype(np.float32))
            f.create_dataset("weight", data=rec.weight.astype(np.float32))
            f.create_dataset("positions", data=rec.positions)
            f.create_dataset("origin", data=np.asarray(rec.origin, dtype=np.float64))
            if rec.probe is not None:
                f.create_dataset("probe", data=rec.probe.astype(np.complex64))
            if rec.consistency is not None:
                g = f.create_group("consistency")
                g.create_dataset("per_frame", data=rec.consistency.per_frame)
                g.attrs["error"] = rec.consistency.error
                g.attrs["scale"] = rec.consistency.scale
                g.attrs["definition"] = "sum((s*sqrt(I_pred) - sqrt(I))^2) / sum(I), valid pixels"
            f.attrs["ptyfast_version"] = __version__
            f.attrs["n_frames"] = rec.n_frames
            f.attrs["provenance"] = json.dumps(provenance, default=json_default)
    return path




def read_reconstruction(path: str | Path) -> dict:
    """Datasets and provenance of a reconstruction file (read-only)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"reconstruction file {path} does not exist.")
    try:
        with h5py.File(path, "r") as f:
            if "object" not in f:
                raise InputError(f"{path} is not a ptyfast reconstruction (no 'object' dataset).")
            out = {k: f[k][()] for k in ("object", "weight", "positions", "origin") if k in f}
            out["probe"] = f["probe"][()] if "probe" in f else None
            out["provenance"] = json.loads(f.attrs.get("provenance", "{}"))
            if "consistency" in f:
                out["consistency"] = {"per_frame": f["consistency/per_frame"][()], **dict(f["consistency"].attrs)}
    except OSError as exc:
        raise InputError(f"{path} is not a readable HDF5 reconstruction ({str(exc).split('(')[0].strip()}).") from None
    return out


def save_previews(rec, stem: str | Path, *, title: str = "") -> list[Path]:
    """PNG previews: ``<stem>_amplitude.png``, ``<stem>_phase.png``, ``<stem>_consistency.png`` (per-frame
    error at each scan position). Written atomically; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = Path(stem)
    covered = rec.covered(0.05)
    paths = []
    for name, data, cmap, label in (("amplitude", rec.amplitude, "gray", "amplitude"),
                                    ("phase", rec.phase, "viridis", "phase (rad)")):
        fig, ax = plt.subplots(figsize=(6, 5.4), dpi=110)
        vals = data[covered] if covered.any() else data.ravel()
        lo, hi = np.percentile(vals, [0.5, 99.5])
        im = ax.imshow(np.where(covered, data, np.nan), cmap=cmap, vmin=lo, vmax=hi)
        fig.colorbar(im, ax=ax, label=label, shrink=0.85)
        ax.set_title(f"{title} {name}".strip())
        ax.set_xlabel("x (object pixels)")
        ax.set_ylabel("y (object pixels)")
        paths.append(_savefig(fig, stem.with_name(f"{stem.name}_{name}.png")))
        plt.close(fig)
    if rec.consistency is not None:
        fig, ax = plt.subplots(figsize=(6, 5.4), dpi=110)
        h, w = rec.weight.shape
        centres = rec.positions + np.asarray(rec.probe.shape if rec.probe is not None else (0, 0)) / 2
        sc = ax.scatter(centres[:, 1], centres[:, 0], c=rec.consistency.per_frame, s=12, cmap="magma")
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_aspect("equal")
        fig.colorbar(sc, ax=ax, label="normalised error per frame", shrink=0.85)
        ax.set_title(f"data consistency ε = {rec.consistency.error:.3g}")
        paths.append(_savefig(fig, stem.with_name(f"{stem.name}_consistency.png")))
        plt.close(fig)
    return paths


def _savefig(fig, path: Path) -> Path:
    return save_figure(fig, path, bbox_inches="tight")
