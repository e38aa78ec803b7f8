"""Readers for foreign scan layouts and the :func:`load_any` dispatcher.

Accepted inputs
---------------
CXI / HDF5 (any suffix, recognised by the HDF5 signature)
    :func:`ptyfast.io.cxi.read_cxi`.
Tike ``.npz`` or ``.npz.bz2`` (the Tike example data layout)
    ``data`` (1, N, H, W) float photon counts with the zero frequency at the array *corner* (fftshifted on
    import), ``scan`` (1, N, 2) float (y, x) of the probe window's minimum corner in object pixels
    (shifted so the minimum is 0), ``probe`` (1, 1, 1, 1, H, W) complex (first mode kept). Tike files hold
    no geometry: :class:`~ptyfast.scan.Geometry` defaults are used and ``meta["geometry_defaulted"]`` is True.
PtyNet arrays, as a directory or an ``.npz``
    ``diffraction`` (N, H, W) photon counts, zero frequency at the centre; ``positions`` (N, 2) (y, x)
    top-left corners in object pixels (shifted so the minimum is 0); optional ``probe`` (H, W) complex,
    ``object`` (complex ground truth on the position grid), ``wavelength``, ``distance``, ``pixel_size``
    (metres; defaults flagged by ``meta["geometry_defaulted"]``). A directory holds them as
    ``diffraction.npy``, ``positions.npy``, ``probe.npy``, ``object.npy`` and optionally ``geometry.json``
    (``{"wavelength": ..., "distance": ..., "pixel_size": ...}``).
"""

from __future__ import annotations

import bz2
import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np

from ptyfast.errors import InputError
from ptyfast.io.cxi import all_modes, probe_modes, read_cxi, read_probe, short_reason
from ptyfast.io.pixels import mask_bad_pixels
from ptyfast.physics.nearfield import detect_near_field
from ptyfast.scan import Geometry, Scan, check_probe, validate_scan_frames

GEOMETRY_KEYS = ("wavelength", "distance", "pixel_size")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        if path.name.endswith(".bz2"):
            with bz2.open(path, "rb") as fh:
                raw = io.BytesIO(fh.read())
        else:
            raw = io.BytesIO(path.read_bytes())
        with np.load(raw, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        detail = short_reason(exc)
        raise InputError(f"{path} could not be read as a (bz2-compressed) .npz archive ({detail}).") from None


def _finish(scan: Scan, auto_mask: bool = True) -> Scan:
    if auto_mask:
        scan.mask = mask_bad_pixels(scan.diffraction, scan.mask, scan.meta)
    validate_scan_frames(scan.diffraction, mask=scan.mask, source=scan.meta["source"])
    scan.near_field, scan.meta["near_field_reason"], scan.meta["near_field_score"] = detect_near_field(scan)
    return scan


def _check_stack(arr: np.ndarray, name: str, path: Path) -> np.ndarray:
    if arr.ndim != 3:
        raise InputError(f"{path}: {name} must be (N, H, W); found shape {arr.shape}.")
    if arr.shape[0] == 0:
        raise InputError(f"{path} holds no diffraction frames (an empty scan).")
    if arr.shape[1] != arr.shape[2]:
        raise InputError(f"{path}: frames are {arr.shape[1]}×{arr.shape[2]}; ptyfast needs square frames - crop "
                         "them around the zero frequency first.")
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{path}: {name} must hold real numbers; found dtype {arr.dtype}.")
    return arr


def _positions(pos: np.ndarray, n: int, name: str, path: Path) -> np.ndarray:
    pos = np.asarray(pos, np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise InputError(f"{path}: {name} must be (N, 2) (y, x) pixels; found shape {pos.shape}.")
    if len(pos) != n:
        raise InputError(f"{path} has {n} diffraction frames but {len(pos)} positions; each frame needs "
                         "exactly one position.")
    if not np.all(np.isfinite(pos)):
        raise InputError(f"{path}: {name} contains NaN or Inf.")
    return pos - pos.min(axis=0)


def read_tike(path: str | Path, *, auto_mask: bool = True) -> Scan:
    """Read a Tike ``.npz``/``.npz.bz2`` scan (see the module docstring); frames are fftshifted to centre."""
    path = Path(path)
    z = _load_npz(path)
    for key in ("data", "scan"):
        if key not in z:
            raise InputError(f"{path} is not a Tike scan: the archive has no '{key}' array (found {sorted(z)}).")
    data = np.asarray(z["data"])
    data = data.reshape(data.shape[-3:]) if data.ndim > 3 and np.prod(data.shape[:-3]) == 1 else data
    data = _check_stack(data, "data", path)
    data = np.fft.fftshift(data, axes=(-2, -1)).astype(np.float32)  # zero frequency corner → centre
    scan_pos = np.asarray(z["scan"])
    scan_pos = scan_pos.reshape(scan_pos.shape[-2:]) if scan_pos.ndim > 2 else scan_pos
    positions = _positions(scan_pos, len(data), "scan", path)
    probe, meta = None, {}
    if "probe" in z:
        p, note = probe_modes(z["probe"])
        if note:
            meta["probe_modes_note"] = note
            meta["probe_modes"] = all_modes(z["probe"]) * np.float32(np.sqrt(p.shape[0] * p.shape[1]))
        if p.shape != data.shape[1:]:
            raise InputError(f"{path}: the stored probe is {p.shape[0]}×{p.shape[1]} but the frames are "
                             f"{data.shape[1]}×{data.shape[2]}; store the probe at the frame size or remove it.")
        # Tike propagates with an unnormalised FFT (sum I = H*W*sum|P*O|^2); ptyfast's forward model is
        # "ortho", so the same physics needs the probe scaled by sqrt(H*W).
        probe = (p * np.sqrt(p.shape[0] * p.shape[1])).astype(np.complex64)
        meta["probe_rescaled"] = "multiplied by sqrt(H*W): Tike FFT (unnormalised) -> ptyfast ortho"
    meta.update(source=str(path), format="tike-npz", geometry_defaulted=True,
                fftshifted_on_import=True)
    return _finish(Scan(diffraction=data, positions=positions, geometry=Geometry(), probe=probe, meta=meta),
                   auto_mask)


def read_ptynet(path: str | Path, *, auto_mask: bool = True) -> Scan:
    """Read PtyNet arrays from a directory or an ``.npz`` (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        z: dict = {}
        for key in ("diffraction", "positions", "probe", "object"):
            f = path / f"{key}.npy"
            if f.is_file():
                try:
                    z[key] = np.load(f, allow_pickle=False)
                except (OSError, ValueError, EOFError) as exc:
                    detail = short_reason(exc)
                    raise InputError(f"{f} could not be read as .npy ({detail}).") from None
        gj = path / "geometry.json"
        if gj.is_file():
            try:
                z.update({k: float(v) for k, v in json.loads(gj.read_text()).items() if k in GEOMETRY_KEYS})
            except (ValueError, TypeError, AttributeError) as exc:
                raise InputError(f"{gj} must be a JSON object of numbers ({short_reason(exc)}).") from None
    else:
        z = _load_npz(path)
    for key in ("diffraction", "positions"):
        if key not in z:
            raise InputError(f"{path} has no '{key}' array; a PtyNet scan needs diffraction (N, H, W) and "
                             "positions (N, 2).")
    data = _check_stack(np.asarray(z["diffraction"]), "diffraction", path)
    positions = _positions(z["positions"], len(data), "positions", path)
    given = {k: float(np.asarray(z[k]).ravel()[0]) for k in GEOMETRY_KEYS if k in z}
    geo = Geometry(**given)
    if any(not np.isfinite(v) or v <= 0 for v in given.values()):
        raise InputError(f"{path}: wavelength, distance and pixel_size must be positive metres; found {given}.")
    probe = np.asarray(z["probe"]).astype(np.complex64) if "probe" in z else None
    truth = np.asarray(z["object"]).astype(np.complex64) if "object" in z else None
    meta = dict(source=str(path), format="ptynet", geometry_defaulted=len(given) < len(GEOMETRY_KEYS))
    return _finish(Scan(diffraction=data, positions=positions, geometry=geo, probe=probe, truth=truth,
                        meta=meta), auto_mask)


def load_any(path: str | Path, *, lazy: bool = True, validate: bool = True, frames: str | None = None,
             auto_mask: bool = True) -> Scan:
    """Read a scan in any supported layout (see the module docstring), dispatching on content and suffix.

    Parameters
    ----------
    path : path
        CXI/HDF5 file, Tike ``.npz``/``.npz.bz2``, PtyNet ``.npz`` or directory.
    lazy : bool
        Keep CXI frames on disk (the npz layouts are always loaded).
    validate : bool
        Check every CXI frame for NaN/Inf/negative counts while opening (one full read). Streaming callers
        that check each chunk themselves (``ptyfast reconstruct``) pass False.
    frames : str, optional
        ``START:STOP[:STEP]`` frame selection (:func:`ptyfast.scan.parse_frames`, the CLI's ``--frames``).
    auto_mask : bool
        Mask detector pixels that do not hold photon counts (:mod:`ptyfast.io.pixels`; the CLI's
        ``--no-auto-mask`` turns it off); judged on the whole file's frames, before ``frames`` selects.

    Raises
    ------
    InputError
        Missing file or an unrecognised layout, naming what is accepted.
    """
    from ptyfast.io.atomic import register_input
    from ptyfast.scan import parse_frames

    register_input(path)
    scan = _load_layout(Path(path), lazy=lazy, validate=validate, auto_mask=auto_mask)
    return scan.select(parse_frames(frames, scan.n_frames)) if frames else scan


def _load_layout(path: Path, *, lazy: bool, validate: bool, auto_mask: bool = True) -> Scan:
    if path.is_dir():
        return read_ptynet(path, auto_mask=auto_mask)
    if not path.is_file():
        raise InputError(f"{path} does not exist.")
    if h5py.is_hdf5(path):
        return read_cxi(path, lazy=lazy, validate=validate, auto_mask=auto_mask)
    name = path.name.lower()
    if name.endswith((".npz", ".npz.bz2")):
        z_keys = set(_load_npz(path)) if name.endswith(".npz") else None
        if z_keys is not None and "diffraction" in z_keys:
            return read_ptynet(path, auto_mask=auto_mask)
        return read_tike(path, auto_mask=auto_mask)
    if name.endswith((".cxi", ".h5", ".hdf5", ".nxs")):
        return read_cxi(path)  # raises the precise "not HDF5 / truncated" message
    raise InputError(f"{path}: unrecognised scan format; give a CXI/HDF5 file, a Tike .npz(.bz2), or a PtyNet "
                     ".npz or directory (diffraction.npy + positions.npy).")


def load_probe(path: str | Path) -> np.ndarray:
    """Load a complex probe from .npy or from a CXI/HDF5 file (``entry_1/instrument_1/source_1/illumination``
    or ``entry_1/probe``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"probe file {path} does not exist.")
    if path.suffix == ".npy":
        try:
            p = np.load(path)
        except Exception as exc:  # corrupt or not an .npy file
            raise InputError(f"probe file {path} could not be read as .npy ({exc}).") from None
    else:
        p = read_probe(path, outputs=True)
    p = np.squeeze(np.asarray(p))
    if p.ndim != 2 or not np.iscomplexobj(p) and not np.isrealobj(p):
        raise InputError(f"probe in {path} must be a 2-D complex array; found shape {p.shape}.")
    check_probe(p, str(path))
    return p.astype(np.complex64)
