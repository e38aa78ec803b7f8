"""Reconstruction output: one HDF5 file (written atomically) and PNG previews.

HDF5 layout (root):
    object (complex64, rows×cols), amplitude, phase (float32, radians), weight (stitching weight map),
    positions (N, 2) (y, x) on the object grid, origin (2,) scan coordinates of grid pixel (0, 0),
    probe (complex64, H×W) when known,
    consistency/per_frame (M,) normalised error per frame, attrs error, scale; consistency/frames (M,) the
    frames they are of when ε was computed on a sample (``reconstruct --consistency-frames``; else M = N),
    attrs: ptyfast_version, object_pixel_size_m (λz/(N·p); NaN when the scan gives no geometry), provenance
    (JSON: model manifest + sha256, backend, precision, device, input file, timings per stage, command options).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import h5py
import numpy as np

from ptyfast import __version__
from ptyfast.errors import InputError
from ptyfast.io.atomic import atomic_path, json_default, save_figure


def write_reconstruction(path: str | Path, rec, provenance: dict, *, datasets: dict | None = None,
                         attrs: dict | None = None) -> Path:
    """Write ``rec`` (a :class:`~ptyfast.runtime.reconstruct.Reconstruction`) to ``path`` atomically: the one result
    format of reconstruct, refine and fine-tuning (``datasets`` and root ``attrs`` add what a producer has
    beyond it, e.g. refine's error per iteration)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", rdcc_nbytes=0) as f:
            # uncompressed, like amplitude and phase: readable by any HDF5 reader, and gzip took 0.4-0.5 s of a
            # 1,600-frame reconstruct for 17 % of the object's 15 MB (docs/benchmarks.md, output compression)
            f.create_dataset("object", data=np.asarray(rec.object, np.complex64))
            _write_by_rows(f, "amplitude", rec.object, np.abs)
            _write_by_rows(f, "phase", rec.object, np.angle)
            f.create_dataset("weight", data=np.asarray(rec.weight, np.float32))
            f.create_dataset("positions", data=rec.positions)
            f.create_dataset("origin", data=np.asarray(rec.origin, dtype=np.float64))
            if rec.probe is not None:
                f.create_dataset("probe", data=np.asarray(rec.probe, np.complex64))
            if getattr(rec, "mask", None) is not None:
                d = f.create_dataset("detector_mask", data=np.asarray(rec.mask, np.uint8))
                d.attrs["meaning"] = "1 = valid detector pixel, 0 = masked (the file's mask and ptyfast's auto-mask)"
            if rec.consistency is not None:
                g = f.create_group("consistency")
                g.create_dataset("per_frame", data=rec.consistency.per_frame)
                g.attrs["error"] = rec.consistency.error
                g.attrs["scale"] = rec.consistency.scale
                if rec.consistency.flat_error is not None:
                    g.attrs["flat_object_error"] = rec.consistency.flat_error
                g.attrs["definition"] = "sum((s*sqrt(I_pred) - sqrt(I))^2) / sum(I), valid pixels"
                if rec.consistency.frames is not None:  # a sample: per_frame[k] is the error of frame frames[k]
                    g.create_dataset("frames", data=np.asarray(rec.consistency.frames, np.int64))
            f.attrs["ptyfast_version"] = __version__
            f.attrs["n_frames"] = rec.n_frames
            f.attrs["provenance"] = json.dumps(provenance, default=json_default)
            f.attrs["object_pixel_size_m"] = float(provenance.get("object_pixel_size_m", float("nan")))
            for k, v in (datasets or {}).items():
                f.create_dataset(k, data=v)
            for k, v in (attrs or {}).items():
                f.attrs[k] = v if isinstance(v, (int, float, str, bool, np.number)) else json.dumps(v, default=str)
    return path




def _write_by_rows(f: h5py.File, name: str, obj: np.ndarray, fn, rows: int = 256) -> None:
    """``f[name] = fn(obj)`` as float32, computed a block of rows at a time: no object-sized temporary (two
    of them, amplitude and phase, were the peak of a 20,000-frame reconstruction's memory)."""
    obj = np.asarray(obj)
    d = f.create_dataset(name, shape=obj.shape, dtype=np.float32)
    for r in range(0, obj.shape[0], rows):
        d[r : r + rows] = fn(obj[r : r + rows]).astype(np.float32, copy=False)


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
                g = f["consistency"]
                out["consistency"] = {"per_frame": g["per_frame"][()], **dict(g.attrs),
                                      "frames": g["frames"][()] if "frames" in g else None}
    except OSError as exc:
        raise InputError(f"{path} is not a readable HDF5 reconstruction ({str(exc).split('(')[0].strip()}).") from None
    return out


def covered_box(covered: np.ndarray) -> tuple[slice, slice]:
    """The bounding box of the covered pixels (the whole array when none is): previews show the scanned area."""
    if not covered.any():
        return slice(0, covered.shape[0]), slice(0, covered.shape[1])
    ys, xs = np.nonzero(covered)
    return slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1)


#: The smallest colour range a preview stretches to: below it an object is shown as flat (one colour in the
#: middle of the map) instead of its rounding noise stretched over the whole map (a collapsed network's output
#: varies by ~1e-5). 0.01 rad of phase; 1 % of the mean amplitude.
MIN_SPAN = {"phase": lambda v: 0.01, "amplitude": lambda v: 0.01 * max(float(np.mean(np.abs(v))), 1e-12)}


def display_limits(values: np.ndarray, min_span: float) -> tuple[float, float]:
    """Colour limits: the 0.5–99.5 % percentiles of ``values``, widened about their middle to ``min_span``."""
    lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    if hi - lo < min_span:
        mid = 0.5 * (lo + hi)
        lo, hi = mid - 0.5 * min_span, mid + 0.5 * min_span
    return lo, hi


def object_previews(stem: str | Path, obj: np.ndarray, covered: np.ndarray, *, title: str = "",
                    pixel_size_m: float | None = None) -> list[Path]:
    """``<stem>_amplitude.png`` and ``<stem>_phase.png`` of ``obj`` cropped to the covered area: the one preview
    style of reconstruct and refine (colour limits the 0.5–99.5 % percentiles of the covered pixels, never narrower
    than ``MIN_SPAN``, printed under a colour bar, so a flat object looks flat; a scale bar in µm when the pixel
    size is known)."""
    stem = Path(stem)
    box = covered_box(covered)
    obj, covered = obj[box], covered[box]
    paths = []
    for name, data, cmap, label in (("amplitude", np.abs(obj), "gray", "amplitude"),
                                    ("phase", np.angle(obj), "viridis", "phase (rad)")):
        vals = data[covered] if covered.any() else data.ravel()
        lo, hi = display_limits(vals, MIN_SPAN[name](vals))
        paths.append(write_preview(stem.with_name(f"{stem.name}_{name}.png"), data, covered, cmap, (lo, hi),
                                   f"{title}: {label}" if title else label, pixel_size_m=pixel_size_m))
    return paths


def save_previews(rec, stem: str | Path, *, title: str = "", pixel_size_m: float | None = None) -> list[Path]:
    """PNG previews written directly with Pillow (no figure on the hot path): the amplitude and phase of
    :func:`object_previews` and ``<stem>_consistency.png`` (each frame's normalised error as a square at its
    probe centre, limits 0…max, on the same crop). Written atomically."""
    stem = Path(stem)
    covered = rec.covered(0.05)
    paths = object_previews(stem, rec.object, covered, title=title, pixel_size_m=pixel_size_m)
    if rec.consistency is not None:
        h, w = rec.weight.shape
        errors = np.full((h, w), np.nan, np.float32)
        half = np.asarray(rec.probe.shape if rec.probe is not None else (0, 0)) / 2
        frames = rec.consistency.frames if rec.consistency.frames is not None else slice(None)
        for (y, x), e in zip(np.round(rec.positions[frames] + half).astype(int), rec.consistency.per_frame):
            errors[max(y - 2, 0): y + 3, max(x - 2, 0): x + 3] = e
        errors = errors[covered_box(covered)]
        shown = np.isfinite(errors)
        top = float(np.max(rec.consistency.per_frame)) if len(rec.consistency.per_frame) else 1.0
        paths.append(write_preview(stem.with_name(f"{stem.name}_consistency.png"), np.nan_to_num(errors), shown,
                                   "magma", (0.0, top), f"error per frame (eps = {rec.consistency.error:.3g}"
                                   + ("" if rec.consistency.frames is None else
                                      f"; {len(rec.consistency.frames)} of {rec.n_frames} frames") + ")",
                                   pixel_size_m=pixel_size_m))
    return paths


LEVELS = 252  # palette entries for the colour map; then grey (not covered), white and black
GREY, WHITE, BLACK = LEVELS, LEVELS + 1, LEVELS + 2


#: The previews' colour maps, bundled as ``ptyfast/data/preview_colours.npy`` ((3, LEVELS, 3) uint8, made from
#: matplotlib's): importing matplotlib's colour maps took 0.12-0.25 s of every reconstruct process.
PREVIEW_MAPS = ("gray", "viridis", "magma")


@functools.lru_cache(maxsize=1)
def _bundled_colours() -> np.ndarray:
    from importlib import resources

    with resources.as_file(resources.files("ptyfast.data") / "preview_colours.npy") as path:
        return np.load(path)


def colour_table(name: str, levels: int = 256) -> np.ndarray:
    """(levels, 3) uint8 lookup table of a matplotlib colour map (the previews' from the bundled tables, others
    through matplotlib.colors, no pyplot)."""
    if levels == LEVELS and name in PREVIEW_MAPS:
        return _bundled_colours()[PREVIEW_MAPS.index(name)]
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0.0, 1.0, levels))[:, :3] * 255).round().astype(np.uint8)


def scale_bar(width_px: int, pixel_size_m: float) -> tuple[int, str]:
    """A round length (1, 2 or 5 × 10^k m) near a fifth of ``width_px`` pixels: (its length in pixels, label)."""
    target = 0.2 * width_px * pixel_size_m
    exponent = np.floor(np.log10(target))
    length = max((m * 10.0**exponent for m in (1, 2, 5) if m * 10.0**exponent <= target * (1 + 1e-9)),
                 default=10.0**exponent)
    um = length * 1e6
    # "um": Pillow's built-in font has no µ glyph
    return max(int(round(length / pixel_size_m)), 1), f"{um:.3g} um" if um >= 0.1 else f"{um * 1e3:.3g} nm"


def write_preview(path: Path, data: np.ndarray, shown: np.ndarray, cmap: str, limits: tuple[float, float],
                  label: str, *, pixel_size_m: float | None = None) -> Path:
    """One image at one object pixel per screen pixel: ``data`` through the colour map between ``limits``
    (pixels outside ``shown`` grey), a colour bar and the limits as text below it, and with a known object
    pixel size a scale bar (µm, written "um") and the pixel size in the label. A palette PNG at zlib level 1: a 1,187²
    preview takes tens of milliseconds."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    lo, hi = limits
    span = hi - lo if hi > lo else 1.0  # lo == hi: a flat image stays one colour
    idx = np.clip((np.asarray(data, np.float32) - lo) * ((LEVELS - 1) / span), 0, LEVELS - 1).astype(np.uint8)
    idx[~shown] = GREY
    h, w = idx.shape
    known = pixel_size_m is not None and np.isfinite(pixel_size_m) and pixel_size_m > 0
    if known:
        label = f"{label}, {pixel_size_m * 1e9:.3g} nm/px"
    left, right = f"{lo:.4g}", f"{hi:.4g}"
    text_w = {t: int(np.ceil(font.getlength(t, mode="1"))) for t in (left, right, label)}  # as drawn on "P"
    width = max(w, sum(text_w.values()) + 24)  # every label fits under a narrow image
    bar_rows = 14 if known else 0
    page = np.full((h + bar_rows + 30, width), WHITE, np.uint8)
    page[:h, :w] = idx
    top = h + bar_rows
    page[top + 2: top + 10] = np.linspace(0, LEVELS - 1, width).astype(np.uint8)
    image = Image.fromarray(page, mode="P")
    palette = np.vstack([colour_table(cmap, LEVELS), [[48, 48, 48], [255, 255, 255], [0, 0, 0]]])
    image.putpalette(palette.astype(np.uint8).ravel().tolist())
    draw = ImageDraw.Draw(image)
    if known:
        length, text = scale_bar(w, pixel_size_m)
        draw.rectangle([2, h + 4, 2 + length, h + 7], fill=BLACK)
        draw.text((length + 8, h + 1), text, fill=BLACK, font=font)
    draw.text((2, top + 12), left, fill=BLACK, font=font)
    draw.text((width - text_w[right] - 2, top + 12), right, fill=BLACK, font=font)
    draw.text((text_w[left] + 12, top + 12), label, fill=BLACK, font=font)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=1)
    return path


def panel_figure(path: Path, panels: list[tuple], title: str = "", *, dpi: int = 100) -> Path:
    """Side-by-side labelled images ``(title, array, colormap[, (vmin, vmax)])``, each with a colour bar, as one
    PNG (matplotlib's object API, no pyplot state): the figures of probes and before/after comparisons."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(panels), 4))
    FigureCanvasAgg(fig)
    for i, (name, img, cmap, *limits) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        vmin, vmax = limits[0] if limits else (None, None)
        fig.colorbar(ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax), ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(name)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)


def error_curves_figure(path: Path, panels: dict[str, dict], *, ylabel: str = "data error",
                        xlabel: str = "iteration", lines: dict[str, float] | None = None, width: float = 5.0,
                        dpi: int = 100) -> Path:
    """Iterative error curves on log axes, one panel per ``panels`` key (its title), each a ``{label: errors}``
    dict (iteration 1 first), a dotted horizontal line per panel from ``lines`` (e.g. a target error): refine's
    error curve, the release check's and the paper protocol's network-start vs flat/random-start rPIE."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * len(panels), 3.8))
    FigureCanvasAgg(fig)
    for i, (title, curves) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for label, e in curves.items():
            ax.semilogy(np.arange(1, len(e) + 1), e, marker="." if len(curves) == 1 else None, label=label)
        if lines and title in lines:
            ax.axhline(lines[title], color="grey", ls=":", lw=0.8)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        ax.grid(True, which="both", alpha=0.3)
        if len(curves) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)


def probe_figure(path: Path, probe: np.ndarray, title: str = "") -> Path:
    """The probe's amplitude and phase side by side (refine's and fine-tuning's ``*_probe.png``)."""
    probe = np.asarray(probe)
    return panel_figure(path, [("|P|", np.abs(probe), "magma"), ("arg P (rad)", np.angle(probe), "twilight")],
                        title or f"probe, Σ|P|² = {float(np.sum(np.abs(probe) ** 2)):.4g}")


def _savefig(fig, path: Path) -> Path:
    return save_figure(fig, path, bbox_inches="tight")
