"""Reading CXI scans (the spec layout of :mod:`ptyfast.io.cxi` and the PyNX variant): geometry, translations,
mask, probe, the ``entry_1/ptyfast`` extras, and the checks that refuse data HDF5 would silently read as zeros."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ptyfast.errors import InputError
from ptyfast.io.cxi_probe import all_modes, probe_modes
from ptyfast.io.cxi_spec import (DATA_PATHS, MASK_NOT_BAD, PROBE_PATHS, PTYFAST_GROUP, TRANSLATION_PATHS,
                                 find_dataset, open_hdf5)
from ptyfast.io.pixels import mask_bad_pixels
from ptyfast.physics.nearfield import detect_near_field
from ptyfast.scan import PLANCK_TIMES_C, Geometry, LazyFrames, Scan, SelectedFrames, validate_scan_frames

__all__ = ["check_filters", "check_storage", "read_cxi", "read_geometry", "read_open", "ready_frames"]


def _scalar(f: h5py.File, p: str, path: Path, *, required: bool = True) -> float | None:
    ds = find_dataset(f, (p,), p.rsplit("/", 1)[-1], path, required=required)
    if ds is None:
        return None
    try:
        v = float(np.asarray(ds[()]).ravel()[0])
    except (IndexError, TypeError, ValueError):
        raise InputError(f"{path}: {p} must hold one number; found {ds.shape} {ds.dtype}.") from None
    if not np.isfinite(v) or v <= 0:
        raise InputError(f"{path}: {p} must be a positive number; found {v}.")
    return v


def read_geometry(f: h5py.File, path: Path) -> Geometry:
    """Geometry from the CXI paths (wavelength preferred, else energy; square detector pixels)."""
    src, det = "entry_1/instrument_1/source_1", "entry_1/instrument_1/detector_1"
    wl = _scalar(f, f"{src}/wavelength", path, required=False)
    if wl is None:
        energy = _scalar(f, f"{src}/energy", path, required=False)
        if energy is None:
            raise InputError(f"{path} has neither {src}/wavelength nor {src}/energy; one is needed.")
        wl = PLANCK_TIMES_C / energy
    dist = _scalar(f, f"{det}/distance", path)
    px = _scalar(f, f"{det}/x_pixel_size", path)
    py = _scalar(f, f"{det}/y_pixel_size", path, required=False) or px
    if abs(px - py) > 1e-6 * px:
        raise InputError(f"{path}: detector pixels are {px:g} × {py:g} m; ptyfast needs square pixels.")
    return Geometry(wavelength=wl, distance=dist, pixel_size=px)


def _read_translation(f: h5py.File, n: int, path: Path) -> tuple[np.ndarray, str]:
    ds = find_dataset(f, TRANSLATION_PATHS, "scan translation", path)
    t = np.asarray(ds[()], dtype=np.float64)
    if f.swmr_mode and t.ndim == 2 and t.shape[0] > n and t.shape[1] in (2, 3):
        t = t[:n]  # a live file: positions may run ahead of the frames
    layout = "(N, 3)"
    if t.ndim == 2 and t.shape[0] in (2, 3) and t.shape[1] == n and t.shape[0] != n:
        t, layout = t.T, "(3, N) (PyNX)"
    if t.ndim != 2 or t.shape[1] not in (2, 3):
        raise InputError(f"{path}: {ds.name} must be (N, 3) metres (or PyNX (3, N)); found shape {t.shape}.")
    if t.shape[0] != n:
        raise InputError(f"{path} has {n} diffraction frames but {t.shape[0]} translations in {ds.name}; "
                         "each frame needs exactly one position.")
    if not np.all(np.isfinite(t)):
        raise InputError(f"{path}: {ds.name} contains NaN or Inf.")
    return t, layout


def _read_mask(f: h5py.File, shape, path: Path) -> np.ndarray | None:
    ds = find_dataset(f, ("entry_1/instrument_1/detector_1/mask",), "mask", path, required=False)
    if ds is None:
        return None
    m = np.asarray(ds[()])
    m = m.reshape(m.shape[-2:]) if m.ndim > 2 and np.prod(m.shape[:-2]) == 1 else m
    if m.shape != tuple(shape):
        raise InputError(f"{path}: the mask is {m.shape} but frames are {tuple(shape)}.")
    return (m.astype(np.int64) & ~MASK_NOT_BAD) == 0


def read_cxi(
    path: str | Path,
    *,
    lazy: bool = True,
    validate: bool = True,
    near_field: bool | None = None,
    margin: float = 0.0,
    auto_mask: bool = True,
) -> Scan:
    """Read a CXI ptychography file (spec or PyNX variant) as a :class:`~ptyfast.scan.Scan`.

    Parameters
    ----------
    path : path
        The file, opened read-only.
    lazy : bool
        Keep the frames on disk (``h5py.Dataset``/:class:`LazyFrames`, file handle in
        ``scan.meta["h5file"]``); ``False`` loads them into memory and closes the file.
    validate : bool
        Check every frame for NaN/Inf/negative counts (chunk by chunk; one pass over the data). Streaming
        consumers of very large files may pass ``False`` and call :func:`validate_frames` per chunk.
    near_field : bool, optional
        Force the near-field flag; by default an ``near_field`` attribute on ``entry_1/ptyfast`` or
        ``entry_1`` is honoured, else :func:`detect_near_field` decides from the data.
    margin : float
        Object pixels added before the first probe window when converting metre translations.
    auto_mask : bool
        Mask the pixels that do not hold photon counts (pinned at the dtype's maximum, dead, hot, saturated,
        behind a beam stop; :mod:`ptyfast.io.pixels`), judged on a sample of frames; what was masked and why is
        in ``scan.meta["auto_mask"]``.

    Returns
    -------
    Scan
        Positions (N, 2) (y, x) in object pixels (exact ``entry_1/ptyfast/positions_px`` when present).
    """
    path = Path(path)
    f = open_hdf5(path)
    try:
        scan = read_open(f, path, lazy=lazy, validate=validate, near_field=near_field, margin=margin,
                          auto_mask=auto_mask)
    except BaseException:
        f.close()
        raise
    if not lazy:
        f.close()
    return scan


def check_filters(ds: h5py.Dataset, path: Path) -> None:
    """Refuse a dataset compressed with an HDF5 filter this installation cannot decode (one sentence, naming
    the filter), instead of a traceback at the first read."""
    plist = ds.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _, _, name = plist.get_filter(i)
        if not h5py.h5z.filter_avail(code):
            label = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
            raise InputError(f"{path}: {ds.name} is compressed with HDF5 filter {code} ({label or 'unnamed'}), "
                             "which this installation cannot decode; install its plugin (hdf5plugin covers the "
                             "common detector filters) or set HDF5_PLUGIN_PATH.")


def check_storage(ds: h5py.Dataset, path: Path) -> None:
    """Refuse a dataset whose bytes live elsewhere and are missing: HDF5 would return fill values (zeros)
    for a virtual dataset whose source file or dataset is gone, or for external raw files shorter than
    declared, without any error."""
    here = Path(path).resolve().parent
    if ds.is_virtual:
        for vs in ds.virtual_sources():
            if vs.file_name == ".":
                src_file, src = None, ds.file
            else:
                src_file = Path(vs.file_name) if Path(vs.file_name).is_absolute() else here / vs.file_name
                if not src_file.is_file():
                    raise InputError(f"{path}: {ds.name} is a virtual dataset whose source file {src_file} is "
                                     "missing; HDF5 would read zeros in its place; copy the source files beside it.")
                try:
                    src = h5py.File(src_file, "r")
                except OSError:
                    raise InputError(f"{path}: {ds.name} maps data from {src_file}, which cannot be read as "
                                     "HDF5.") from None
            try:
                if not isinstance(src.get(vs.dset_name), h5py.Dataset):
                    raise InputError(f"{path}: {ds.name} maps dataset {vs.dset_name} of {src_file or path}, "
                                     "which does not exist; HDF5 would read zeros in its place.")
            finally:
                if src_file is not None:
                    src.close()
    for name, offset, size in ds.external or ():
        name = name.decode() if isinstance(name, bytes) else name
        candidates = [Path(name)] if Path(name).is_absolute() else [here / name, Path.cwd() / name]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise InputError(f"{path}: {ds.name} is stored in external file {name}, which is missing; "
                             "HDF5 would read zeros in its place.")
        have = max(c.stat().st_size for c in found)
        if size != h5py.h5f.UNLIMITED and have < offset + size:
            raise InputError(f"{path}: external file {name} of {ds.name} holds {have} bytes but {offset + size} "
                             "are declared; it is truncated and HDF5 would read zeros for the rest.")


def ready_frames(f: h5py.File, path: Path) -> int:
    """Frames of an open file that have both their pattern and their position (on a live file the datasets
    grow separately; :mod:`ptyfast.io.live` opens the file afresh for each look, so shapes are current)."""
    data = find_dataset(f, DATA_PATHS, "diffraction data", path)
    trans = find_dataset(f, TRANSLATION_PATHS, "scan translation", path)
    pf = f.get(PTYFAST_GROUP)
    exact = pf.get("positions_px") if isinstance(pf, h5py.Group) else None
    n = data.shape[1] if data.ndim == 4 else data.shape[0]
    if trans.ndim == 2 and trans.shape[0] in (2, 3) and trans.shape[1] != 3:  # PyNX (3, N)
        n = min(n, trans.shape[1])
    elif trans.ndim:
        n = min(n, trans.shape[0])
    if isinstance(exact, h5py.Dataset) and exact.ndim:
        n = min(n, exact.shape[0])
    return int(n)


def read_open(f: h5py.File, path: Path, *, lazy, validate, near_field, margin, auto_mask=True) -> Scan:
    """:func:`read_cxi` of a file already open (``f``, named ``path`` in messages): the file stays open."""
    data = find_dataset(f, DATA_PATHS, "diffraction data", path)
    check_storage(data, path)
    check_filters(data, path)
    shape = data.shape
    if len(shape) == 4 and shape[0] == 1:
        frames: Any = LazyFrames(data, lead=(0,))
        layout = "(1, N, H, W)"
    elif len(shape) == 3:
        frames, layout = data, "(N, H, W)"
    else:
        raise InputError(f"{path}: {data.name} must be (N, H, W) or (1, N, H, W); found shape {shape}.")
    n, h, w = frames.shape
    if f.swmr_mode:  # a live file: only the frames that have their positions too
        n = min(n, ready_frames(f, path))
        if n < frames.shape[0]:
            frames = SelectedFrames(frames, np.arange(n))
    if n == 0:
        raise InputError(f"{path} holds no diffraction frames (an empty scan).")
    if h != w:
        raise InputError(f"{path}: frames are {h}×{w}; ptyfast needs square frames - crop them to "
                         f"{min(h, w)}×{min(h, w)} around the zero frequency first.")
    if data.dtype.kind not in "iuf":
        raise InputError(f"{path}: {data.name} must hold real numbers; found dtype {data.dtype}.")
    pf = f.get(PTYFAST_GROUP)
    unknown = isinstance(pf, h5py.Group) and pf.attrs.get("geometry") == "unknown"
    geo = Geometry() if unknown else read_geometry(f, path)
    trans, tlayout = _read_translation(f, n, path)
    mask = _read_mask(f, (h, w), path)
    meta: dict = {"source": str(path), "format": "cxi", "data_layout": layout, "translation_layout": tlayout}
    if isinstance(pf, h5py.Group) and isinstance(pf.get("positions_px"), h5py.Dataset):
        positions = np.asarray(pf["positions_px"][:n], np.float64)
        if positions.shape != (n, 2):
            raise InputError(f"{path}: {PTYFAST_GROUP}/positions_px is {positions.shape}; expected ({n}, 2).")
        meta.update(json.loads(pf.attrs.get("meta_json", "{}")))
        meta.update(source=str(path), format="cxi")
    else:
        dx = geo.object_pixel_size(h)
        positions = -trans[:, [1, 0]] / dx
        positions -= positions.min(axis=0) - margin
    if unknown:
        meta["geometry_defaulted"] = True
    truth = None
    if isinstance(pf, h5py.Group) and isinstance(pf.get("truth_object"), h5py.Dataset):
        truth = np.asarray(pf["truth_object"][()], np.complex64)
    probe = None
    pds = find_dataset(f, PROBE_PATHS, "probe", path, required=False)
    if pds is not None:
        p, note = probe_modes(pds[()])
        if note:
            meta["probe_modes_note"] = note
            meta["probe_modes"] = all_modes(pds[()])
        if p.shape != (h, w):
            raise InputError(f"{path}: the stored probe {pds.name} is {p.shape[0]}×{p.shape[1]} but the frames "
                             f"are {h}×{w}; store the probe at the frame size or remove it.")
        probe = p.astype(np.complex64)
    if auto_mask:
        mask = mask_bad_pixels(frames, mask, meta)
    if validate:
        validate_scan_frames(frames, mask=mask, source=str(path))
    if not lazy:
        frames = np.asarray(frames[:])
    else:
        meta["h5file"] = f
    scan = Scan(diffraction=frames, positions=positions, geometry=geo, probe=probe, mask=mask, truth=truth,
                meta=meta)
    override = near_field
    reason = "set by the caller"
    for g in (pf, f.get("entry_1")):
        if override is None and isinstance(g, h5py.Group) and "near_field" in g.attrs:
            override = bool(g.attrs["near_field"])
            reason = (f"{'near' if override else 'far'}-field, as recorded in the file (attribute near_field "
                      f"on {g.name})")
    if override is not None:
        scan.near_field = override
        scan.meta["near_field_reason"] = reason
    else:
        scan.near_field, scan.meta["near_field_reason"], score = detect_near_field(scan)
        scan.meta["near_field_score"] = score
    return scan
