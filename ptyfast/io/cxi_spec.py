"""The CXI layout's fixed parts (paths, mask bits) and the helpers every CXI reader shares: opening an HDF5
file with one-sentence errors and finding a dataset under one of several paths. The layout itself is described in
:mod:`ptyfast.io.cxi`."""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin

from ptyfast.errors import InputError

__all__ = [
    "CXI_VERSION", "DATA_PATHS", "MASK_INVALID", "MASK_NOT_BAD", "OUTPUT_PROBE_PATH", "PLUGIN_FILTERS", "PROBE_PATHS",
    "PTYFAST_GROUP", "TRANSLATION_PATHS", "find_dataset", "open_hdf5", "short_reason",
]

CXI_VERSION = 150
MASK_INVALID = 0x1  #: CXI bit 0: invalid pixel
MASK_NOT_BAD = 0x1000  #: CXI bit 12: "above threshold" - not a reason to drop the pixel
DATA_PATHS = ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data")
TRANSLATION_PATHS = ("entry_1/sample_1/geometry_1/translation", "entry_1/data_1/translation")
PROBE_PATHS = ("entry_1/instrument_1/source_1/illumination", "entry_1/probe")
PTYFAST_GROUP = "entry_1/ptyfast"

#: Where a ptyfast output (reconstruct, refine, finetune) keeps its probe.
OUTPUT_PROBE_PATH = "probe"

#: The HDF5 filters readable besides HDF5's own: importing ``hdf5plugin`` registers the detector compressions
#: (bitshuffle/LZ4, LZ4, Blosc, Blosc2, Zstd, ...), and every CXI reader and writer imports this module.
PLUGIN_FILTERS = tuple(hdf5plugin.FILTERS)


def short_reason(exc: BaseException) -> str:
    """First line of an exception's message (library messages can span lines; ours must not)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_hdf5(path: Path) -> h5py.File:
    """``path`` opened read-only, or an :class:`InputError` saying why it cannot be (missing, not HDF5, still
    open for writing, truncated)."""
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


def find_dataset(f: h5py.File, paths, what: str, path: Path, *, required: bool = True):
    """The first dataset of ``f`` found under ``paths``; an :class:`InputError` naming ``what`` when there is
    none (None instead when not ``required``)."""
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
