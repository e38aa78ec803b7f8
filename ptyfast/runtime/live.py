"""``reconstruct --follow``: reconstruct a scan while it is being written (HDF5 SWMR, :mod:`ptyfast.io.live`).

Each poll reads the frames that have arrived (pattern and position) and runs them through the network; the
patches are kept (cropped to where the probe is, see :class:`~ptyfast.runtime.stitch.StitchPlan`), because
the object grid grows with the positions and, with phase alignment, every offset depends on all patches.
Every ``refresh_frames`` new frames or ``refresh_seconds`` (whichever first) the object is stitched from all
patches so far and handed to ``on_refresh`` (the CLI writes the HDF5 and previews atomically, so a reader never
sees a half-written file). The follow ends when the writer marks the scan complete or closes the file, or when
nothing has arrived for ``idle_timeout`` seconds; the final object is stitched exactly as an offline
reconstruction of the same frames (same plan, same patches, same blend) and gets the consistency pass.

Memory: the kept patches, 63 kB per frame for the default probe (131 kB without phase alignment).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ptyfast.errors import InputError


@dataclass
class FollowOptions:
    idle_timeout: float = 60.0
    refresh_frames: int = 256
    refresh_seconds: float = 10.0
    poll: float = 0.1


@dataclass
class FollowResult:
    rec: object
    provenance: dict
    ended: str
    complete: bool


class KeptPatches:
    """The patches kept so far, in one array whose capacity doubles as frames arrive: a refresh reads them as
    a view, instead of concatenating every patch again (a full copy per refresh)."""

    def __init__(self) -> None:
        self._data: np.ndarray | None = None
        self.count = 0

    def append(self, patches: np.ndarray) -> None:
        need = self.count + len(patches)
        if self._data is None or need > len(self._data):
            grown = np.empty((max(need, 2 * self.count, 256), *patches.shape[1:]), patches.dtype)
            if self._data is not None:
                grown[: self.count] = self._data[: self.count]
            self._data = grown
        self._data[self.count : need] = patches
        self.count = need

    def view(self) -> np.ndarray:
        return self._data[: self.count]


def open_live(path, options: FollowOptions):
    """Open ``path`` for SWMR reading, retrying until ``idle_timeout`` (the writer may not have created it)."""
    from ptyfast.io.live import LiveFile

    t0 = time.monotonic()
    while True:
        try:
            return LiveFile(path)
        except (OSError, FileNotFoundError) as exc:
            if time.monotonic() - t0 >= options.idle_timeout:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise InputError(
                    f"could not open {path} for live (SWMR) reading within {options.idle_timeout:g} s ({reason}); "
                    "the writer must create it with HDF5's latest format and switch SWMR mode on "
                    "(h5py: libver='latest', f.swmr_mode = True), or reconstruct the finished file without --follow."
                ) from None
            time.sleep(options.poll)


def follow(path, job, backend, reason: str, options: FollowOptions, *, on_refresh=None, on_frames=None
           ) -> FollowResult:
    """Follow ``path`` until the scan ends (see the module docstring); returns the final reconstruction.

    ``on_refresh(rec, provenance)`` receives each intermediate reconstruction; ``on_frames(n)`` the count of
    frames read so far after each poll that found new ones."""
    from ptyfast.runtime.reconstruct import describe, finish_reconstruction, plan_for
    from ptyfast.runtime.stitch import PartialStitch, stitch_frames

    live = open_live(path, options)
    live.auto_mask = job.auto_mask
    t_start = time.perf_counter()
    patches = KeptPatches()
    timings: dict = {}
    done, shown = 0, 0
    last_arrival = last_refresh = time.monotonic()
    plan = note = None
    while True:
        n, ended = live.poll()  # the end is read first: frames flushed before it are then counted
        if n > done:
            with live.snapshot() as scan:
                plan, note = plan_for(scan, job, backend)
                part = stitch_frames(scan, backend, plan, done, n, batch=job.batch, chunk=job.chunk,
                                     keep_patches=True)
            patches.append(part.patches)
            for k, v in part.timings.items():
                timings[k] = timings.get(k, 0.0) + v
            del part  # its patches are copied into the kept array
            done = n
            last_arrival = time.monotonic()
            if on_frames is not None:
                on_frames(done)
        now = time.monotonic()
        if ended:
            break
        if now - last_arrival >= options.idle_timeout:
            ended = (f"no new frame for {options.idle_timeout:g} s: the writer stopped without closing the file "
                     "or marking the scan complete")
            break
        due = done - shown >= options.refresh_frames or (now - last_refresh >= options.refresh_seconds)
        if on_refresh is not None and done > shown and due:
            with live.snapshot() as scan:
                scan = scan.select(np.arange(done)) if scan.n_frames > done else scan
                part = PartialStitch(0, done, patches=patches.view(), timings=dict(timings))
                plan, note = plan_for(scan, job, backend)
                rec = finish_reconstruction(scan, plan, part, consistency=False, t_start=t_start)
                prov = describe(rec, scan, job, backend, reason, plan, note)
            on_refresh(rec, prov)
            shown, last_refresh = done, time.monotonic()
        time.sleep(options.poll)
    if done == 0:
        raise InputError(f"{path}: no frame arrived ({ended}); nothing was written.")
    with live.snapshot() as scan:
        scan = scan.select(np.arange(done)) if scan.n_frames > done else scan
        plan, note = plan_for(scan, job, backend)
        part = PartialStitch(0, done, patches=patches.view(), timings=timings)
        rec = finish_reconstruction(scan, plan, part, consistency=job.consistency, chunk=job.chunk,
                                    t_start=t_start)
        prov = describe(rec, scan, job, backend, reason, plan, note)
    complete = not ended.startswith("no new frame")
    prov["live"] = {"ended": ended, "complete": complete}
    return FollowResult(rec, prov, ended, complete)
