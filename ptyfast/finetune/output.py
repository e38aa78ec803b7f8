"""What fine-tuning writes: the model (+ learned probe), its before/after preview and the ``ptyfast finetune``
command's library function."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from ptyfast.errors import InputError
from ptyfast.finetune.loop import finetune
from ptyfast.finetune.options import FinetuneOptions, FinetuneResult, select_frames
from ptyfast.finetune.probe import resolve_probe
from ptyfast.finetune.validation import held_out_frames
from ptyfast.io.atomic import atomic_path
from ptyfast.runtime.output import MIN_SPAN, display_limits, panel_figure, probe_figure

__all__ = ["save_finetuned", "save_probe", "save_preview", "finetune_file"]


def save_probe(directory: Path, probe: np.ndarray, *, stem: str = "probe") -> list[Path]:
    """Write ``probe.npy`` (complex64) and ``probe.png`` (amplitude and phase) into ``directory``."""
    directory = Path(directory)
    npy = directory / f"{stem}.npy"
    with atomic_path(npy) as tmp, open(tmp, "wb") as fh:  # np.save(name) would append ".npy" to the name
        np.save(fh, np.asarray(probe, np.complex64))
    png = directory / f"{stem}.png"
    probe_figure(png, probe)
    return [npy, png]


def save_preview(path: Path, before: np.ndarray, after: np.ndarray, weight_mask: np.ndarray | None = None) -> Path:
    """PNG of the stitched phase and amplitude before and after fine-tuning (mean phase removed; grey levels
    between the same limits for before and after: :func:`~ptyfast.runtime.output.display_limits` of the covered
    region, so a flat object looks flat)."""
    sel = weight_mask if weight_mask is not None else (np.abs(before) > 0) & (np.abs(after) > 0)
    if not np.any(sel):
        sel = np.ones(before.shape, bool)
    imgs = {}
    for name, obj in (("before", before), ("after", after)):
        ph = np.angle(obj * np.exp(-1j * np.angle(np.sum(obj[sel]))))
        imgs[name] = (np.where(sel, ph, np.nan), np.where(sel, np.abs(obj), np.nan))
    panels = []
    for k, label, kind in ((0, "phase (rad)", "phase"), (1, "amplitude", "amplitude")):
        vals = np.concatenate([imgs[n][k][sel] for n in imgs])
        lo, hi = display_limits(vals, MIN_SPAN[kind](vals))
        for name in ("before", "after"):
            panels.append((f"{label} {name}", np.clip(imgs[name][k], lo, hi), "gray", (lo, hi)))
    panel_figure(Path(path), panels)
    return Path(path)


def model_folder(path: str | os.PathLike) -> Path:
    """The folder a fine-tuned model goes to, refused (one sentence) when it is a file or its parent is missing."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"cannot write the model to {out}: it is a file; give a folder with -o.")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write {out}: directory {parent} does not exist; create it first.")
    return out


def save_finetuned(out_dir: str | os.PathLike, result: FinetuneResult, *, name: str = "finetuned",
                   preview: bool = True) -> dict[str, Path]:
    """Write a fine-tuned model atomically: ``<name>.pt`` + ``<name>.json`` (manifest), and with a learned
    probe ``probe.npy`` + ``probe.png``; when the result carries stitched objects, ``preview.png`` (before and
    after) and ``preview.h5`` (the object after, in reconstruct's result format).

    All files appear together or none does (:func:`~ptyfast.io.atomic.output_transaction`); a folder this call
    created is removed again on failure.

    Returns
    -------
    dict of what was written: ``checkpoint``, ``manifest``, and optionally ``probe``, ``probe_png``,
    ``preview``, ``result``.
    """
    import torch

    from ptyfast.io.atomic import output_folder, output_transaction
    from ptyfast.models.checkpoint import save_checkpoint

    out = model_folder(out_dir)
    with output_folder(out), output_transaction():
        o = result.options or FinetuneOptions()
        extra = {
            "probe": torch.from_numpy(np.ascontiguousarray(result.probe.astype(np.complex64))),
            "amplitude_scale": float(result.amplitude_scale),
            "finetune_history": [[h["epoch"], h["loss"], h["r_factor"]] for h in result.history],
            "finetune_options": {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                                 for k, v in asdict(o).items()},
        }
        save_checkpoint(out / f"{name}.pt", result.model, result.manifest, **extra)
        names = {"checkpoint": f"{name}.pt", "manifest": f"{name}.json"}
        if o.learn_probe:
            save_probe(out, result.probe)
            names.update(probe="probe.npy", probe_png="probe.png")
        if preview and result.before is not None and result.after is not None:
            save_preview(out / "preview.png", result.before, result.after)
            names["preview"] = "preview.png"
            _write_result(out / "preview.h5", result)
            names["result"] = "preview.h5"
    return {k: out / v for k, v in names.items()}


def _write_result(path: Path, result: FinetuneResult) -> None:
    """The fine-tuned network's stitched object in reconstruct's result format (``evaluate``, ``refine --init``
    and the viewers read it like any reconstruction)."""
    from ptyfast.runtime.output import write_reconstruction
    from ptyfast.runtime.reconstruct import Reconstruction

    rec = Reconstruction(object=result.after, weight=result.weight_after, positions=result.positions,
                         origin=np.asarray(result.origin), probe=result.probe, n_frames=len(result.positions),
                         mask=result.mask)
    write_reconstruction(path, rec, {"source": "ptyfast finetune", "model_manifest": result.manifest.to_json(),
                                     "r_factor_before": result.r_factor_before,
                                     "r_factor_after": result.r_factor_after,
                                     "frames": len(result.frames), "object_pixel_size_m": result.pixel_size_m,
                                     "held_out_frames": len(result.held_out) if result.held_out is not None else 0,
                                     "held_out_error_before": result.held_out_error_before,
                                     "held_out_error_after": result.held_out_error_after,
                                     "finetune_verdict": result.verdict})


def finetune_file(
    scan_path: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    probe: str | os.PathLike | None = None,
    output: str | os.PathLike = "finetuned",
    options: FinetuneOptions | None = None,
    name: str | None = None,
    device="cpu",
    progress: Callable[[int, dict], None] | None = None,
    on_start: Callable[[dict], None] | None = None,
    frames: str | None = None,
    auto_mask: bool = True,
) -> tuple[FinetuneResult, dict[str, Path]]:
    """Load a scan and a model, fine-tune, and write the new model (the ``ptyfast finetune`` command).

    Every input is checked before anything is written: a bad scan, model, probe or option raises
    :class:`InputError` and leaves no output behind.

    Parameters
    ----------
    scan_path : any layout :func:`ptyfast.io.convert.load_any` reads (CXI, Tike npz, PtyNet npz/folder).
    model : shipped name or checkpoint path (``.pt``; ONNX/TensorRT files cannot be fine-tuned).
    probe : ``None`` (the scan's probe), a ``.npy``/CXI file, or ``"fresnel"``.
    output : folder for the new model.
    name : file stem of the new checkpoint (default ``<model>-ft``).
    on_start : called once with ``{"frames", "held_out", "frames_total", "probe", "model", "auto_mask_note"}``
        before the first epoch (``frames``: those trained on; ``held_out``: how many are kept out to judge the
        weights; ``auto_mask_note``: which detector pixels were masked on read, or "").
    auto_mask : mask detector pixels that hold no photon counts (:mod:`ptyfast.io.pixels`).
    """
    from ptyfast.io.convert import load_any
    from ptyfast.models.checkpoint import load_checkpoint
    from ptyfast.models.pretrained import resolve_model

    o = (options or FinetuneOptions()).validate()
    out = model_folder(output)  # checked before any work
    scan = load_any(scan_path, frames=frames, auto_mask=auto_mask)
    src = str(scan_path)
    if scan.near_field:
        raise InputError(f"{src} is near-field data; fine-tuning uses the far-field model and cannot use it.")
    source = resolve_model(model)
    if source.checkpoint is None:
        raise InputError(
            f"model '{source.name}' has no torch checkpoint (.pt); fine-tuning needs the weights, not an "
            "ONNX/TensorRT export."
        )
    from ptyfast.models.preprocess import fit_probe

    p = resolve_probe(scan, probe, source=src)
    net, manifest = load_checkpoint(source.checkpoint)
    size = tuple(manifest.input_size)
    if size != tuple(scan.frame_shape) and o.fit == "none":
        raise InputError(
            f"the frames of {src} are {scan.frame_shape[0]}×{scan.frame_shape[1]} but model '{source.name}' "
            f"expects {size[0]}×{size[1]}; pass --fit crop (or bin/pad), or fine-tune a model of that size."
        )
    p = fit_probe(p, size, o.fit)  # the probe goes where the frames go
    selected = select_frames(scan.n_frames, o.subset)
    held = held_out_frames(selected, o.val_fraction)  # refused here (too few frames) before any work
    if on_start is not None:
        on_start({"frames": len(selected) - len(held), "held_out": len(held), "frames_total": scan.n_frames,
                  "probe": "given" if probe is None else str(probe), "model": str(source.checkpoint),
                  "auto_mask_note": scan.meta.get("auto_mask_note", "")})
    result = finetune(scan, net, manifest, p, o, source=src, stitch=True, device=device, progress=progress)
    result.mask = scan.mask
    written = save_finetuned(out, result, name=name or f"{source.name}-ft")
    return result, written
