"""Writing CXI files: the layout of :mod:`ptyfast.io.cxi` (also created empty and growable for a live scan,
:mod:`ptyfast.io.live`), the frames streamed and validated chunk by chunk, and the frame compressions."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the detector filters (bitshuffle/LZ4, LZ4, Blosc, Blosc2, Zstd, ...)
import numpy as np

from ptyfast.choices import Compression
from ptyfast.errors import InputError
from ptyfast.io.atomic import atomic_path
from ptyfast.io.cxi_spec import CXI_VERSION, MASK_INVALID, PTYFAST_GROUP
from ptyfast.scan import Scan, validate_frames

__all__ = ["COMPRESSIONS", "compression_filter", "create_layout", "frame_dtype", "translations", "write_cxi"]


def _jsonable(meta: dict) -> dict:
    out = {}
    for k, v in meta.items():
        try:
            json.dumps(v)
        except TypeError:
            continue
        out[k] = v
    return out


def write_cxi(path: str | Path, scan: Scan, *, chunk: int = 64, compression: str | None = None) -> Path:
    """Write ``scan`` to a spec-conformant CXI file, atomically (see the module docstring for the layout).

    Frames are streamed ``chunk`` at a time (a lazy scan never loads whole) and validated on the way
    (:func:`validate_frames`), so a bad input leaves no file behind.

    Parameters
    ----------
    path : path
        Output file (``.cxi``); replaced only when writing succeeds.
    scan : Scan
        The scan. ``positions`` are converted to metre translations with the object pixel size λz/(Hp).
    chunk : int
        Frames per read/validate/write step.
    compression : str, optional
        Frame compression, one of :data:`COMPRESSIONS` (``bitshuffle-lz4`` is what Eiger detectors write);
        none by default (fastest to read).

    Returns
    -------
    Path
        ``path``.
    """
    n = scan.n_frames
    src = str(scan.meta.get("source", "the scan"))
    with atomic_path(path) as tmp, h5py.File(tmp, "w", rdcc_nbytes=0) as f:
        data, trans, pos = create_layout(f, scan, n, compression=compression)
        for s in range(0, n, chunk):
            frames = np.asarray(scan.diffraction[s : min(s + chunk, n)])
            frames = frames if frames.dtype == data.dtype else frames.astype(np.float32)
            validate_frames(frames, start=s, mask=scan.mask, source=src)
            data[s : s + len(frames)] = frames
        trans[:], pos[:] = translations(scan), scan.positions
    return Path(path)


def translations(scan: Scan) -> np.ndarray:
    """(N, 3) CXI sample translations (m) of the scan's positions: t = −(x_px, y_px, 0) · dx."""
    dx = scan.geometry.object_pixel_size(scan.frame_shape[0])
    t = np.zeros((scan.n_frames, 3))
    t[:, 0] = -scan.positions[:, 1] * dx
    t[:, 1] = -scan.positions[:, 0] * dx
    return t


def frame_dtype(scan: Scan) -> np.dtype:
    """How frames are stored: as the detector's unsigned integer counts when the scan holds them (so its
    markers, e.g. 2³²−1 for a dead pixel, survive), else float32 photons."""
    dtype = np.dtype(getattr(scan.diffraction, "dtype", np.float32))
    return dtype if dtype in (np.dtype(np.uint16), np.dtype(np.uint32)) else np.dtype(np.float32)


def create_layout(f: h5py.File, scan: Scan, n: int | None, *, compression: str | None = None):
    """Write everything of the CXI layout except the per-frame data, and create the per-frame datasets
    (frames, translations, ``positions_px``) with ``n`` rows, or empty and growable along axis 0 when ``n``
    is None (a live scan, :mod:`ptyfast.io.live`). Returns those three datasets."""
    h, w = scan.frame_shape
    geo = scan.geometry
    dx = geo.object_pixel_size(h)
    grow = n is None
    rows = 0 if grow else n
    f["cxi_version"] = CXI_VERSION
    f["number_of_entries"] = 1
    e = f.create_group("entry_1")
    src_g = e.create_group("instrument_1/source_1")
    det = e.create_group("instrument_1/detector_1")
    known = not scan.meta.get("geometry_defaulted")
    if known:  # a source without geometry (Tike npz, PtyNet) gets none written: unknown is not measured
        src_g["energy"] = geo.energy
        src_g["energy"].attrs["units"] = "J"
        src_g["wavelength"] = geo.wavelength
        src_g["wavelength"].attrs["units"] = "m"
        det["distance"] = geo.distance
        det["x_pixel_size"] = geo.pixel_size
        det["y_pixel_size"] = geo.pixel_size
        for k in ("distance", "x_pixel_size", "y_pixel_size"):
            det[k].attrs["units"] = "m"
    dtype = frame_dtype(scan)
    data = det.create_dataset("data", shape=(rows, h, w), maxshape=(None if grow else rows, h, w), dtype=dtype,
                              chunks=(1, h, w), **compression_filter(compression))
    data.attrs["axes"] = "translation:y:x"
    data.attrs["units"] = "photons"
    if scan.mask is not None:
        det["mask"] = np.where(np.asarray(scan.mask, bool), 0, MASK_INVALID).astype(np.uint32)
    if scan.probe is not None:
        src_g["illumination"] = np.asarray(scan.probe, np.complex64)
    geo_g = e.create_group("sample_1/geometry_1")
    trans = geo_g.create_dataset("translation", shape=(rows, 3), maxshape=(None if grow else rows, 3),
                                 dtype=np.float64, chunks=(256, 3) if grow else None)
    trans.attrs["units"] = "m"
    if not known:
        trans.attrs["note"] = f"geometry unknown: metres assume an object pixel of {dx:.4g} m; positions_px are exact"
    d1 = e.create_group("data_1")
    d1["data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
    d1["translation"] = h5py.SoftLink("/entry_1/sample_1/geometry_1/translation")
    pf = f.create_group(PTYFAST_GROUP)
    pf.attrs["format_version"] = 1
    pf.attrs["convention"] = (
        "positions_px: (N,2) (y,x) top-left corner of the probe window in object pixels; "
        "translation = -(x,y)*object_pixel_size; Psi = fftshift(fft2(P*O, norm='ortho')), I = |Psi|^2"
    )
    pf.attrs["object_pixel_size"] = dx
    pf.attrs["geometry"] = "measured" if known else "unknown"
    pf.attrs["near_field"] = bool(scan.near_field)
    pf.attrs["meta_json"] = json.dumps(_jsonable({k: v for k, v in scan.meta.items() if k != "h5file"}))
    pos = pf.create_dataset("positions_px", shape=(rows, 2), maxshape=(None if grow else rows, 2), dtype=np.float64,
                            chunks=(256, 2) if grow else None)
    if scan.truth is not None:
        pf["truth_object"] = np.asarray(scan.truth, np.complex64)
    return data, trans, pos


COMPRESSIONS = Compression.values()


def compression_filter(name: str | None) -> dict:
    """h5py ``create_dataset`` keywords for a frame compression named on the command line."""
    name = (name or "none").lower()
    if name not in COMPRESSIONS:
        raise InputError(f"unknown compression '{name}'; choose one of {', '.join(COMPRESSIONS)}.")
    return {"none": {}, "gzip": {"compression": "gzip", "compression_opts": 4},
            "lz4": dict(hdf5plugin.LZ4()), "bitshuffle-lz4": dict(hdf5plugin.Bitshuffle(cname="lz4")),
            "zstd": dict(hdf5plugin.Zstd()),
            "blosc-zstd": dict(hdf5plugin.Blosc(cname="zstd", shuffle=hdf5plugin.Blosc.SHUFFLE))}[name]
