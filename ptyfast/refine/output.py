"""Writing a refinement: one HDF5 file (atomic) and optional PNGs.

HDF5 layout: reconstruct's result format (:func:`ptyfast.runtime.output.write_reconstruction`, one writer), plus:

==================  ======================  ===============================================================
dataset             shape, dtype            meaning
==================  ======================  ===============================================================
``object``          (rows, cols) complex64  refined object transmission
``amplitude``       (rows, cols) float32    |object|
``phase``           (rows, cols) float32    angle(object), radians
``probe``           (H, W) complex64        refined probe (photons: Σ|P|² per frame, ortho FFT)
``positions``       (N, 2) float64          (y, x) window corners in object pixels
``weight``          (rows, cols) float32    illumination Σ_n |P|² at each pixel (``evaluate``'s coverage)
``origin``          (2,) float64            scan coordinates of object pixel (0, 0)
``errors``          (iterations,) float64   normalised amplitude error per iteration
``timings``         (iterations,) float64   seconds per iteration
==================  ======================  ===============================================================

Root attributes: ``algorithm``, every refine option, ``diverged``, ``message``, ``source`` (the scan),
``object_pixel_size_m`` (λz/(N·p); NaN when the scan gives no geometry),
``init``, ``ptyfast_version``, ``created`` (UTC ISO time).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import h5py
import numpy as np

from ptyfast.errors import InputError


def _np(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def write_refine_h5(path: str | Path, result, *, provenance: dict | None = None, origin=(0.0, 0.0),
                    weight: np.ndarray | None = None, mask: np.ndarray | None = None) -> Path:
    """Write a :class:`~ptyfast.refine.RefineResult` to ``path`` atomically, in reconstruct's result format
    (:func:`ptyfast.runtime.output.write_reconstruction`) plus its errors and timings (see the module table)."""
    from ptyfast.runtime.output import write_reconstruction
    from ptyfast.runtime.reconstruct import Reconstruction

    obj = _np(result.object).astype(np.complex64)
    positions = np.asarray(result.positions, dtype=np.float64)
    # the illumination Σ|P|² at each pixel, as `reconstruct` writes it: `evaluate` compares where it is high
    weight = result_weight(result) if weight is None else weight
    rec = Reconstruction(object=obj, weight=np.asarray(weight, np.float32), positions=positions,
                         origin=np.asarray(origin, dtype=np.float64), probe=_np(result.probe).astype(np.complex64),
                         n_frames=len(positions), mask=mask)
    attrs = {**result.options, **(provenance or {}), "diverged": bool(result.diverged), "message": result.message,
             "meta": json.dumps(result.meta, default=float),
             "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    return write_reconstruction(path, rec, {**result.options, **(provenance or {})},
                                datasets={"errors": np.asarray(result.errors, dtype=np.float64),
                                          "timings": np.asarray(result.timings, dtype=np.float64)}, attrs=attrs)


def read_init(path: str | Path) -> dict:
    """``--init FILE`` (a reconstruct/refine output): its ``object``, the scan coordinates of the object's pixel
    (0, 0) (``origin``, zero when absent) and its ``probe`` (None when absent), so refinement starts exactly
    where the file left off."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--init {path} does not exist; give an output file of `ptyfast reconstruct`, 'flat' or 'random'.")
    if not h5py.is_hdf5(path):
        raise InputError(f"--init {path} is not an HDF5 file; give an output of `ptyfast reconstruct`, 'flat' or 'random'.")
    with h5py.File(path, "r") as f:
        if "object" not in f:
            raise InputError(f"--init {path} has no 'object' dataset at its root (found {sorted(f)}).")
        obj = np.squeeze(np.asarray(f["object"]))
        origin = tuple(float(v) for v in f["origin"][()]) if "origin" in f else (0.0, 0.0)
        probe = np.asarray(f["probe"][()], np.complex64) if "probe" in f else None
    if obj.ndim != 2:
        raise InputError(f"--init {path}: 'object' must be 2-D; found shape {obj.shape}.")
    return {"object": obj.astype(np.complex64), "origin": origin, "probe": probe}


def illumination(probe: np.ndarray, positions: np.ndarray, shape) -> np.ndarray:
    """Σ_n |P|² at each object pixel (bilinear windows, as stitching): the coverage map of a refinement."""
    from ptyfast.kernels.numpy_twins import overlap_add

    p2 = np.abs(probe) ** 2
    p2 = p2.reshape(-1, *p2.shape[-2:]).sum(axis=0)  # a mixed-state probe lights with all its modes
    return overlap_add(np.zeros(shape, np.float32), np.broadcast_to(p2, (len(positions),) + p2.shape), positions)


def result_weight(result) -> np.ndarray:
    """The illumination map of a :class:`~ptyfast.refine.RefineResult` (numpy, from CuPy too)."""
    return illumination(_np(result.probe), np.asarray(result.positions, np.float64), _np(result.object).shape)


def save_pngs(result, stem: str | Path, *, weight: np.ndarray | None = None, pixel_size_m: float | None = None
              ) -> list[Path]:
    """Amplitude and phase previews in ``reconstruct``'s style (:func:`ptyfast.runtime.output.object_previews`:
    cropped to the covered area — illumination ≥ 5 % of its maximum —, percentile limits printed under a colour
    bar, a µm scale bar when ``pixel_size_m`` is known), plus probe (amplitude | phase) and error-curve figures,
    beside ``stem``. Returns the written paths: ``<stem>_amplitude.png``, ``_phase.png``, ``_probe.png``,
    ``_errors.png``."""
    from ptyfast.runtime.output import error_curves_figure, object_previews, probe_figure

    stem = Path(stem)
    obj = _np(result.object)
    probe = _np(result.probe)
    if weight is None:
        weight = result_weight(result)
    shown = weight >= 0.05 * float(weight.max()) if weight.max() > 0 else np.ones(obj.shape, bool)
    out = object_previews(stem, obj, shown, title=f"{result.algorithm}, {result.iterations} iterations", pixel_size_m=pixel_size_m)

    out.append(probe_figure(stem.with_name(f"{stem.name}_probe.png"), probe[0] if probe.ndim == 3 else probe,
                            title=f"mode 0 of {len(probe)}" if probe.ndim == 3 else ""))
    out.append(error_curves_figure(stem.with_name(f"{stem.name}_errors.png"),
                                   {f"{result.algorithm} error": {"error": result.errors}},
                                   ylabel="Σ(|Ψ|−√I)² / Σ I", width=6.0, dpi=110))
    return out
