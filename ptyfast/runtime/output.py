"""Reconstruction output: one HDF5 file (written atomically) and PNG previews.

HDF5 layout (root):
    object (complex64, rows×cols), amplitude, phase (float32, radians), weight (stitching weight map),
    positions (N, 2) (y, x) on the object grid, origin (2,) scan coordinates of grid pixel (0, 0),
    probe (complex64, H×W) when known,
    consistency/per_frame (N,) normalised error per frame, attrs error, scale,
    attrs: ptyfast_version, object_pixel_size_m (λz/(N·p); NaN when the scan gives no geometry), provenance
    (JSON: model manifest + sha256, backend, precision, device, input file, timings per stage, command options).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from ptyfast import __version__
from ptyfast.errors import InputError
from ptyfast.io.atomic import atomic_path, json_default, save_figure


def write_reconstruction(path: str | Path, rec, provenance: dict, *, datasets: dict | None = None,
                         attrs: dict | None = None) -> Path:
    """Write ``rec`` (a :class:`~ptyfast.runtime.pipeline.Reconstruction`) to ``path`` atomically: the one result
    format of reconstruct, refine and fine-tuning (``datasets`` and root ``attrs`` add what a producer has
    beyond it, e.g. refine's error per iteration)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", rdcc_nbytes=0) as f:
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
            f.attrs["object_pixel_size_m"] = float(provenance.get("object_pixel_size_m", float("nan")))
            for k, v in (datasets or {}).items():
                f.create_dataset(k, data=v)
            for k, v in (attrs or {}).items():
                f.attrs[k] = v if isinstance(v, (int, float, str, bool, np.number)) else json.dumps(v, default=str)
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
    """PNG previews written directly with Pillow (no figure on the hot path): ``<stem>_amplitude.png``,
    ``<stem>_phase.png`` (covered pixels; colour limits the 0.5–99.5 % percentiles of the covered region,
    printed under the image beside a colour bar, so a flat object looks flat) and ``<stem>_consistency.png``
    (each frame's normalised error as a square at its probe centre, limits 0…max). Written atomically."""
    stem = Path(stem)
    covered = rec.covered(0.05)
    paths = []
    for name, data, cmap, label in (("amplitude", rec.amplitude, "gray", "amplitude"),
                                    ("phase", rec.phase, "viridis", "phase (rad)")):
        vals = data[covered] if covered.any() else data.ravel()
        lo, hi = (float(v) for v in np.percentile(vals, [0.5, 99.5]))
        paths.append(write_preview(stem.with_name(f"{stem.name}_{name}.png"), data, covered, cmap, (lo, hi),
                                   f"{title} {label}".strip()))
    if rec.consistency is not None:
        h, w = rec.weight.shape
        errors = np.full((h, w), np.nan, np.float32)
        half = np.asarray(rec.probe.shape if rec.probe is not None else (0, 0)) / 2
        for (y, x), e in zip(np.round(rec.positions + half).astype(int), rec.consistency.per_frame):
            errors[max(y - 2, 0): y + 3, max(x - 2, 0): x + 3] = e
        shown = np.isfinite(errors)
        top = float(np.max(rec.consistency.per_frame)) if len(rec.consistency.per_frame) else 1.0
        paths.append(write_preview(stem.with_name(f"{stem.name}_consistency.png"), np.nan_to_num(errors), shown,
                                   "magma", (0.0, top), f"error per frame (eps = {rec.consistency.error:.3g})"))
    return paths


LEVELS = 252  # palette entries for the colour map; then grey (not covered), white and black
GREY, WHITE, BLACK = LEVELS, LEVELS + 1, LEVELS + 2


def colour_table(name: str, levels: int = 256) -> np.ndarray:
    """(levels, 3) uint8 lookup table of a matplotlib colour map (matplotlib.colors only, no pyplot)."""
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0.0, 1.0, levels))[:, :3] * 255).round().astype(np.uint8)


def write_preview(path: Path, data: np.ndarray, shown: np.ndarray, cmap: str, limits: tuple[float, float],
                  label: str) -> Path:
    """One image at one object pixel per screen pixel: ``data`` through the colour map between ``limits``
    (pixels outside ``shown`` grey), a colour bar and the limits as text below it. A palette PNG at zlib
    level 1: a 1,187² preview takes tens of milliseconds."""
    from PIL import Image, ImageDraw

    lo, hi = limits
    span = hi - lo if hi > lo else 1.0  # lo == hi: a flat image stays one colour
    idx = np.clip((np.asarray(data, np.float32) - lo) * ((LEVELS - 1) / span), 0, LEVELS - 1).astype(np.uint8)
    idx[~shown] = GREY
    h, w = idx.shape
    width = max(w, 240)
    page = np.full((h + 30, width), WHITE, np.uint8)
    page[:h, :w] = idx
    page[h + 2: h + 10] = np.linspace(0, LEVELS - 1, width).astype(np.uint8)
    image = Image.fromarray(page, mode="P")
    palette = np.vstack([colour_table(cmap, LEVELS), [[48, 48, 48], [255, 255, 255], [0, 0, 0]]])
    image.putpalette(palette.astype(np.uint8).ravel().tolist())
    draw = ImageDraw.Draw(image)
    right = f"{hi:.4g}"
    draw.text((2, h + 12), f"{lo:.4g}", fill=BLACK)
    draw.text((width - 6 * len(right) - 2, h + 12), right, fill=BLACK)
    draw.text((width // 2 - 3 * len(label), h + 12), label, fill=BLACK)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=1)
    return path


def _savefig(fig, path: Path) -> Path:
    return save_figure(fig, path, bbox_inches="tight")
