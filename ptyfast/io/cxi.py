"""CXI files (Coherent X-ray Imaging format, https://www.cxidb.org/cxi.html) for ptychographic scans.

Layout written by :func:`write_cxi` (spec paths; lengths in metres, energy in joules)::

    cxi_version                                      150
    number_of_entries                                1
    entry_1/instrument_1/source_1/energy             photon energy (J)
    entry_1/instrument_1/source_1/wavelength         wavelength (m)
    entry_1/instrument_1/source_1/illumination       complex64 (H, W) probe (when present)
    entry_1/instrument_1/detector_1/data             float32 (N, H, W) photon counts (uint16/uint32 when the
                                                     scan holds detector integers), zero frequency at
                                                     (H//2, W//2); chunks of one frame (streamable)
    entry_1/instrument_1/detector_1/distance         sample-detector distance (m)
    entry_1/instrument_1/detector_1/x_pixel_size     detector pixel size (m)
    entry_1/instrument_1/detector_1/y_pixel_size     detector pixel size (m)
    entry_1/instrument_1/detector_1/mask             uint32 (H, W) CXI pixel bits, 0 = good, 0x1 = invalid
    entry_1/sample_1/geometry_1/translation          float64 (N, 3) sample translation (x, y, z) (m)
    entry_1/data_1/data                              soft link → instrument_1/detector_1/data
    entry_1/data_1/translation                       soft link → sample_1/geometry_1/translation
    entry_1/ptyfast/                                 ptyfast extras (see below)

Translation sign convention
---------------------------
CXI stores the *sample* translation in the lab frame, (x, y, z). Moving the sample by +t moves the probe
by −t over the sample, so ptyfast's probe-window position in object pixels is

    (y_px, x_px) = −(t_y, t_x) / dx,      dx = λ·z / (H·p)    (the object pixel size)

and on reading, positions are then shifted so that their minimum is ``margin`` (default 0) on each axis:
the object grid starts at the corner of the top-left-most probe window. Writing uses z = 0 and
``t = −(x_px, y_px) · dx``.

The ``entry_1/ptyfast`` group
-----------------------------
``positions_px`` (N, 2) float64: the exact (y, x) positions in object pixels (read back verbatim, so
``read_cxi(write_cxi(scan))`` reproduces positions bit for bit); ``truth_object`` complex64: the ground-truth
object of a simulated scan on the same pixel grid. Attributes: ``format_version`` (1), ``object_pixel_size``
(m), ``near_field`` (bool; also honoured on ``entry_1`` of foreign files as an explicit override) and
``meta_json`` (the scan's JSON-serialisable provenance).

Reading
-------
:func:`read_cxi` opens files read-only and keeps the diffraction lazy (an ``h5py.Dataset``, or a
:class:`LazyFrames` view for PyNX-style (1, N, H, W) stacks); the open ``h5py.File`` is kept in
``scan.meta["h5file"]`` so the frames stay readable. Accepted variants: translation as (N, 3) or PyNX's (3, N);
energy or wavelength; probe at ``source_1/illumination`` or ``entry_1/probe``; CXI mask bits, a pixel is bad
where ``mask & ~0x1000`` is non-zero (0x1000 only flags pixels above a threshold).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401 - registers the detector filters (bitshuffle/LZ4, LZ4, Blosc, Blosc2, Zstd, ...)
import numpy as np

from ptyfast.errors import InputError
from ptyfast.io.atomic import atomic_path
from ptyfast.io.pixels import mask_bad_pixels
from ptyfast.physics.nearfield import detect_near_field
from ptyfast.scan import (PLANCK_TIMES_C, Geometry, LazyFrames, Scan, SelectedFrames, validate_frames,
                          validate_scan_frames)

CXI_VERSION = 150
MASK_INVALID = 0x1  #: CXI bit 0: invalid pixel
MASK_NOT_BAD = 0x1000  #: CXI bit 12: "above threshold" - not a reason to drop the pixel
DATA_PATHS = ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data")
TRANSLATION_PATHS = ("entry_1/sample_1/geometry_1/translation", "entry_1/data_1/translation")
PROBE_PATHS = ("entry_1/instrument_1/source_1/illumination", "entry_1/probe")
PTYFAST_GROUP = "entry_1/ptyfast"


# --------------------------------------------------------------------------------------------------- checks


def short_reason(exc: BaseException) -> str:
    """First line of an exception's message (library messages can span lines; ours must not)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------------- writing


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


# --------------------------------------------------------------------------------------------------- reading


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise InputError(f"{path} does not exist.")
    if not h5py.is_hdf5(path):
        raise InputError(f"{path} is not an HDF5/CXI file (no HDF5 signature); give a .cxi/.h5 file or a "
                         "supported npz/npy layout.")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        detail = short_reason(exc)
        if "already open for write" in str(exc):
            raise InputError(f"{path} is still open for writing (HDF5 says so, {detail}); reconstruct it live with "
                             "--follow, wait until its writer closes it, or, if the writer crashed, clear the flag "
                             "with h5clear -s.") from None
        raise InputError(f"{path} could not be opened as HDF5 - it looks truncated or corrupt ({detail}).") from None


def _find(f: h5py.File, paths, what: str, path: Path, *, required: bool = True):
    for p in paths:
        try:
            obj = f.get(p)
        except (KeyError, OSError, RuntimeError):  # dangling soft link, damaged object
            obj = None
        if isinstance(obj, h5py.Dataset):
            return obj
    if required:
        alt = " or ".join(paths)
        raise InputError(f"{path} has no {what} dataset: expected {alt}.")
    return None


def _scalar(f: h5py.File, p: str, path: Path, *, required: bool = True) -> float | None:
    ds = _find(f, (p,), p.rsplit("/", 1)[-1], path, required=required)
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
    ds = _find(f, TRANSLATION_PATHS, "scan translation", path)
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
    ds = _find(f, ("entry_1/instrument_1/detector_1/mask",), "mask", path, required=False)
    if ds is None:
        return None
    m = np.asarray(ds[()])
    m = m.reshape(m.shape[-2:]) if m.ndim > 2 and np.prod(m.shape[:-2]) == 1 else m
    if m.shape != tuple(shape):
        raise InputError(f"{path}: the mask is {m.shape} but frames are {tuple(shape)}.")
    return (m.astype(np.int64) & ~MASK_NOT_BAD) == 0


def probe_modes(stored: np.ndarray) -> tuple[np.ndarray, str]:
    """The probe to use from a stored probe array: one (H, W) mode, or the strongest of several incoherent
    modes stacked on the leading axes (mixed states, as Tike, Pty-Chi and PtyPy store them), with a note
    saying how many there were and which is used (empty for a single mode). Returns (probe, note)."""
    p = np.asarray(stored)
    if p.ndim <= 2:
        return p, ""
    modes = p.reshape(-1, *p.shape[-2:])
    power = np.sum(np.abs(modes.astype(np.complex128)) ** 2, axis=(1, 2))
    nonzero = power > 0
    if nonzero.sum() <= 1:
        k = int(np.argmax(power))
        return modes[k], ""
    k = int(np.argmax(power))
    shares = ", ".join(f"{v / power.sum():.0%}" for v in power[nonzero])
    return modes[k], (f"the file holds {int(nonzero.sum())} probe modes (power {shares}); mode {k} (the strongest, "
                      f"{power[k] / power.sum():.0%} of the power) is used")


def all_modes(stored) -> np.ndarray:
    """Every mode of a stored probe as (modes, H, W) complex64 (``refine`` refines them all)."""
    p = np.asarray(stored)
    return p.reshape(-1, *p.shape[-2:]).astype(np.complex64)


#: Where a ptyfast output (reconstruct, refine, finetune) keeps its probe.
OUTPUT_PROBE_PATH = "probe"


def read_probe(path: str | Path, *, outputs: bool = False) -> np.ndarray:
    """The probe of a CXI/HDF5 file: complex (H, W) at ``entry_1/instrument_1/source_1/illumination`` or
    ``entry_1/probe`` — or, with ``outputs``, a ptyfast result's ``probe`` (the strongest mode when several are
    stored, :func:`probe_modes`)."""
    path = Path(path)
    with _open(path) as f:
        ds = _find(f, PROBE_PATHS + ((OUTPUT_PROBE_PATH,) if outputs else ()), "probe", path)
        p, _ = probe_modes(ds[()])
    return p.astype(np.complex64)


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
    f = _open(path)
    try:
        scan = _read_open(f, path, lazy=lazy, validate=validate, near_field=near_field, margin=margin,
                          auto_mask=auto_mask)
    except BaseException:
        f.close()
        raise
    if not lazy:
        f.close()
    return scan


COMPRESSIONS = ("none", "gzip", "lz4", "bitshuffle-lz4", "zstd", "blosc-zstd")


def compression_filter(name: str | None) -> dict:
    """h5py ``create_dataset`` keywords for a frame compression named on the command line."""
    name = (name or "none").lower()
    if name not in COMPRESSIONS:
        raise InputError(f"unknown compression '{name}'; choose one of {', '.join(COMPRESSIONS)}.")
    return {"none": {}, "gzip": {"compression": "gzip", "compression_opts": 4},
            "lz4": dict(hdf5plugin.LZ4()), "bitshuffle-lz4": dict(hdf5plugin.Bitshuffle(cname="lz4")),
            "zstd": dict(hdf5plugin.Zstd()),
            "blosc-zstd": dict(hdf5plugin.Blosc(cname="zstd", shuffle=hdf5plugin.Blosc.SHUFFLE))}[name]


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
    data = _find(f, DATA_PATHS, "diffraction data", path)
    trans = _find(f, TRANSLATION_PATHS, "scan translation", path)
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


def _read_open(f: h5py.File, path: Path, *, lazy, validate, near_field, margin, auto_mask=True) -> Scan:
    data = _find(f, DATA_PATHS, "diffraction data", path)
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
    pds = _find(f, PROBE_PATHS, "probe", path, required=False)
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
