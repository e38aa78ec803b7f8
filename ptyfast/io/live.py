"""Scans that are still being written: HDF5 SWMR (single writer, multiple readers).

Reading (:class:`LiveFile`, used by ``reconstruct --follow``): the file is opened with ``swmr=True``; the
frames and translation datasets (and ``entry_1/ptyfast/positions_px`` when present) grow along axis 0, and a
frame counts once its pattern *and* its position exist (:func:`ptyfast.io.cxi.ready_frames`). The scan is
complete when

- the writer sets the end marker ``entry_1/ptyfast/scan_complete`` (an int8 scalar created before SWMR
  writing starts, 0 → 1; SWMR writers cannot create objects later), or
- the writer closes the file: HDF5 then clears the superblock's file-consistency flags (byte 11 of a
  version-2/3 superblock: bit 0 "open for writing", bit 2 "open for SWMR writing"), which we read directly
  because HDF5 reuses this process's own open handle instead of re-checking them.

Writing (:func:`stream_cxi`, ``ptyfast simulate --stream RATE``): the layout of :func:`ptyfast.io.cxi.write_cxi`
with growable per-frame datasets, written frame by frame at a given rate, each frame flushed so readers
see it — a stand-in for a detector's writer in tests, demos and the latency benchmark.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from ptyfast.errors import InputError
from ptyfast.io.cxi import PTYFAST_GROUP, _read_open, create_layout, ready_frames, translations
from ptyfast.scan import Scan, validate_frames

END_MARKER = f"{PTYFAST_GROUP}/scan_complete"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
WRITE_FLAGS = 0x1 | 0x4  # superblock v2/v3 file-consistency flags: open for writing / for SWMR writing


def writer_active(path: str | Path) -> bool:
    """Whether the superblock says a writer has the file open. The superblock sits at 0, 512, 1024, ...
    bytes; versions 0/1 (HDF5's default, older format) cannot be written in SWMR mode, and a non-SWMR writer
    holds a lock that keeps SWMR readers out, so a file of those versions that we could open is complete."""
    with open(path, "rb") as fh:
        offset = 0
        size = os.fstat(fh.fileno()).st_size
        while offset + 12 <= size:
            fh.seek(offset)
            head = fh.read(12)
            if head[:8] == HDF5_SIGNATURE:
                return bool(head[11] & WRITE_FLAGS) if head[8] >= 2 else False
            offset = 512 if offset == 0 else offset * 2
    return False


class LiveFile:
    """A CXI file being written, read in SWMR mode (see the module docstring).

    Each look opens the file afresh and closes it again (a new handle sees the current dataset shapes; keeping
    one handle and refreshing several datasets through it trips HDF5's metadata cache)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._open().close()  # OSError while it cannot be opened for SWMR reading (the caller retries)
        self.near_field: bool | None = None
        self.auto_mask = True  # mask detector pixels that hold no photon counts (ptyfast.io.pixels)

    def _open(self) -> h5py.File:
        return h5py.File(self.path, "r", swmr=True)

    def poll(self) -> tuple[int, str | None]:
        """(frames that have both a pattern and a position, why the scan is complete or None)."""
        with self._open() as f:
            marker = f.get(END_MARKER)
            ended = None
            if isinstance(marker, h5py.Dataset) and int(np.asarray(marker[()])) != 0:
                ended = "the writer marked the scan complete"
            elif not writer_active(self.path):
                ended = "the writer closed the file"
            try:
                n = ready_frames(f, self.path)
            except InputError:
                n = 0  # the datasets do not exist yet
        return n, ended

    @contextmanager
    def snapshot(self) -> Iterator[Scan]:
        """The scan of the frames ready now (lazy frames, readable inside the block; the near-field decision
        taken on the first snapshot and kept)."""
        f = self._open()
        try:
            scan = _read_open(f, self.path, lazy=True, validate=False, near_field=self.near_field, margin=0.0,
                              auto_mask=self.auto_mask)
            self.near_field = scan.near_field
            yield scan
        finally:
            f.close()


def stream_cxi(path: str | Path, scan: Scan, rate: float, *, on_frame=None, stop_after: int | None = None,
               mark_complete: bool = True) -> Path:
    """Write ``scan`` to ``path`` frame by frame at ``rate`` frames/s in SWMR mode.

    The file appears at once under its final name (readers follow it while it grows), so an existing file there
    is refused rather than replaced; frames are validated first, so bad input leaves no file. Each frame's pattern, translation and exact position are appended and
    flushed together; ``on_frame(index, time)`` is called after each flush. ``stop_after`` stops after that
    many frames *without closing the file* (the process then exits as a crashed writer would) — for tests.
    On any error or signal the file is removed: a stream that did not finish is not a scan.
    """
    from ptyfast.io.atomic import register_temporary, unregister_temporary

    path = Path(path)
    if path.exists():  # the stream grows under its final name (no temporary to rename): never over a file
        raise InputError(f"{path} exists; a live stream is written under its final name while it grows, so it "
                         "never replaces a file: remove it or choose another name.")
    n = scan.n_frames
    validate_frames(np.asarray(scan.diffraction[:]), mask=scan.mask, source=str(scan.meta.get("source", "the scan")))
    pos_all, trans_all = scan.positions, translations(scan)
    register_temporary(path)  # removed on error or signal until the stream is complete
    f = h5py.File(path, "w", libver="latest")
    try:
        data, trans, pos = create_layout(f, scan, None)
        marker = f.create_dataset(END_MARKER, data=np.int8(0))
        f.swmr_mode = True
        t0 = time.perf_counter()
        for i in range(n):
            wait = t0 + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            for ds, row in ((data, scan.diffraction[i]), (trans, trans_all[i]), (pos, pos_all[i])):
                ds.resize(i + 1, axis=0)
                ds[i] = row
            for ds in (data, trans, pos):
                ds.flush()
            if on_frame is not None:
                on_frame(i, time.time())
            if stop_after is not None and i + 1 >= stop_after:
                unregister_temporary(path)
                os._exit(0)  # a writer that stops without closing (no HDF5 clean-up runs)
        if mark_complete:
            marker[()] = 1
            marker.flush()
    except BaseException:
        f.close()
        raise
    f.close()
    unregister_temporary(path)
    return path
