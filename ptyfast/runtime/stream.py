"""Streaming a scan's frames beside the work on them: a reader thread and a background stage.

The reconstruct job overlaps its stages (:func:`ptyfast.runtime.stitch.stitch_frames`): a background thread
reads, validates and preprocesses ``chunk`` frames at a time into a bounded queue (:func:`stream_frames`), the
calling thread hands batches to the backend, and a second background thread (:class:`BackgroundStage`) stitches
each batch's outputs in frame order while the next batches are inferred, so the wall time approaches the
inference time, not the sum of the stages. These two threads are pipeline stages, not thread pools:
``--threads`` sets the libraries' pools.

Memory: at most ``queue_depth`` chunks read ahead and ``depth`` batches waiting for the stage, so what is in
flight is O(chunk · H · W), independent of the number of frames.
"""

from __future__ import annotations

import queue
import threading
import time

from ptyfast.scan import Scan, validate_frames

#: Frames read (and preprocessed) per chunk. Up to ``queue_depth`` + 2 chunks are in flight at once, raw and
#: preprocessed: 128 frames of 128² keep that to ≈ 40 MB; larger chunks only cost memory.
CHUNK = 128


def _reader(scan: Scan, chunk: int, start: int, stop: int, out: queue.Queue, stop_event: threading.Event,
            stats: dict, transform=None) -> None:
    try:
        for s in range(start, stop, chunk):
            if stop_event.is_set():
                return
            t = time.perf_counter()
            frames = scan.frames(s, min(s + chunk, stop))
            validate_frames(frames, start=s, mask=scan.mask, source=scan.meta.get("source", "the scan"))
            t2 = time.perf_counter()
            stats["read"] += t2 - t
            if transform is not None:
                frames = transform(frames)
                stats["preprocess"] = stats.get("preprocess", 0.0) + time.perf_counter() - t2
            out.put((s, frames))
        out.put(None)
    except BaseException as exc:  # forwarded to the consumer, which re-raises
        out.put(exc)


def stream_frames(scan: Scan, chunk: int, *, start: int = 0, stop: int | None = None, queue_depth: int = 3,
                  stats: dict | None = None, transform=None):
    """Yield (start, frames) chunks of frames [start, stop) read and validated — and passed through
    ``transform`` when given (e.g. preprocessing) — by a background thread (bounded queue)."""
    stats = stats if stats is not None else {"read": 0.0}
    stats.setdefault("read", 0.0)
    stop = scan.n_frames if stop is None else stop
    q: queue.Queue = queue.Queue(maxsize=queue_depth)
    halt = threading.Event()
    th = threading.Thread(target=_reader, args=(scan, chunk, start, stop, q, halt, stats, transform), daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        halt.set()
        while th.is_alive():  # drain so the reader can finish
            try:
                q.get_nowait()
            except queue.Empty:
                th.join(0.05)


class BackgroundStage:
    """A stage in a background thread: ``put(*item)`` hands over one item (blocking while ``depth`` items wait)
    for ``work(*item)``, in order; ``close()`` waits for them and re-raises the stage's error, if any. Numpy
    releases the GIL in the heavy parts, so the stage's work overlaps the caller's. ``setup()``, when given, runs
    first in the stage's thread (while the caller produces the first item)."""

    def __init__(self, work, depth: int = 2, setup=None) -> None:
        self._work = work
        self._setup = setup
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._setup is not None:
            try:
                self._setup()
            except BaseException as exc:
                self._error = exc
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._error is None:  # after an error, drain without working so put() never blocks forever
                try:
                    self._work(*item)
                except BaseException as exc:
                    self._error = exc

    def put(self, *item) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(item)

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
