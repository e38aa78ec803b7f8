"""CXI files (Coherent X-ray Imaging format, https://www.cxidb.org/cxi.html) for ptychographic scans.

This module describes the format and gathers the names; the work is split by job: :mod:`ptyfast.io.cxi_spec`
(paths, mask bits, opening a file), :mod:`ptyfast.io.cxi_read` (scans), :mod:`ptyfast.io.cxi_probe` (probes of
scans and of ptyfast outputs) and :mod:`ptyfast.io.cxi_write` (the layout, frames, compression).

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
:func:`read_cxi` (:mod:`ptyfast.io.cxi_read`) opens files read-only and keeps the diffraction lazy (an ``h5py.Dataset``, or a
:class:`LazyFrames` view for PyNX-style (1, N, H, W) stacks); the open ``h5py.File`` is kept in
``scan.meta["h5file"]`` so the frames stay readable. Accepted variants: translation as (N, 3) or PyNX's (3, N);
energy or wavelength; probe at ``source_1/illumination`` or ``entry_1/probe``; CXI mask bits, a pixel is bad
where ``mask & ~0x1000`` is non-zero (0x1000 only flags pixels above a threshold).
"""

from ptyfast.io.cxi_probe import all_modes, probe_modes, read_probe
from ptyfast.io.cxi_read import check_filters, check_storage, read_cxi, read_geometry, read_open, ready_frames
from ptyfast.io.cxi_spec import (CXI_VERSION, DATA_PATHS, MASK_INVALID, MASK_NOT_BAD, OUTPUT_PROBE_PATH, PROBE_PATHS,
                                 PTYFAST_GROUP, TRANSLATION_PATHS, short_reason)
from ptyfast.io.cxi_write import COMPRESSIONS, compression_filter, create_layout, frame_dtype, translations, write_cxi

__all__ = [
    "COMPRESSIONS", "CXI_VERSION", "DATA_PATHS", "MASK_INVALID", "MASK_NOT_BAD", "OUTPUT_PROBE_PATH", "PROBE_PATHS",
    "PTYFAST_GROUP", "TRANSLATION_PATHS", "all_modes", "check_filters", "check_storage", "compression_filter",
    "create_layout", "frame_dtype", "probe_modes", "read_cxi", "read_geometry", "read_open", "read_probe",
    "ready_frames", "short_reason", "translations", "write_cxi",
]

_read_open = read_open  # the name ptyfast.io.live imports
