"""The backend interface: a loaded model that maps a batch of preprocessed patterns to (amplitude, phase).

:class:`Backend` holds what every backend shares: the input check, running one large call split over the CPU
streams, and :meth:`Backend.map`, which keeps several batches in flight. A backend implements ``_run`` (one
batch; thread-safe when it sets ``streams`` > 1), ``close`` and, where it has more to say, ``describe``.
"""

from __future__ import annotations

import collections
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ptyfast.errors import InputError
from ptyfast.models.manifest import Manifest

INPUT_NAME = "diffraction"
OUTPUT_NAMES = ("amplitude", "phase")


def cpu_threads() -> int:
    """Threads ptyfast computes with (:func:`ptyfast.threads.get`: ``--threads``, else the usable cores)."""
    from ptyfast import threads

    return threads.get()


def has_module(name: str) -> bool:
    """Whether ``name`` is installed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec(name) is not None


#: Most batches a CPU backend runs side by side (:func:`cpu_streams`).
MAX_STREAMS = 8


def cpu_streams(threads: int) -> tuple[int, int]:
    """(streams, threads per stream) for ``threads`` CPU threads: batches run side by side, each on its own
    thread(s), rather than one batch at a time on every thread. A stream never waits for another, so when
    reading or stitching takes a core for a moment, one batch runs slower instead of every worker of a
    parallel region spinning at its barrier (the comparison is in docs/benchmarks.md). At most
    :data:`MAX_STREAMS` streams (each holds a batch's activations); beyond that each stream gets several
    threads."""
    threads = max(1, int(threads))
    per_stream = math.ceil(threads / MAX_STREAMS)
    return threads // per_stream, per_stream


class Backend:
    """A loaded model that maps (B, 1, H, W) float32 network input to (amplitude, phase), each (B, H, W).

    Attributes
    ----------
    name : str
        ``onnxruntime``, ``tensorrt`` or ``torch``.
    precision : str
        ``fp32``, ``fp16``, ``bf16`` or ``int8``.
    device : str
        ``cpu`` or ``cuda``.
    manifest : Manifest
        The model's manifest (input size, preprocessing, output ranges).
    model_path : Path or None
        The file actually run (ONNX, engine or checkpoint).
    """

    name: str = ""
    precision: str = "fp32"
    device: str = "cpu"
    manifest: Manifest
    model_path: Path | None = None
    streams: int = 1  # batches run side by side (CPU: :func:`cpu_streams`)
    #: Return each batch's outputs where they were computed (torch CUDA tensors) instead of as numpy: set by
    #: reconstruct while it stitches on the device (:func:`ptyfast.runtime.reconstruct.device_stitching`).
    device_outputs: bool = False
    supports_device_outputs: bool = False  # whether _run honours device_outputs
    _pool: ThreadPoolExecutor | None = None

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run one batch.

        Parameters
        ----------
        x : numpy.ndarray
            (B, 1, H, W) float32 preprocessed patterns (see :func:`ptyfast.models.preprocess.preprocess`).

        Returns
        -------
        amplitude, phase : numpy.ndarray
            float32 (B, H, W) each; phase in radians.
        """
        x = self._check(x)
        if self.streams > 1 and len(x) > 1:  # split over the streams: one call uses every core
            outs = list(self._executor().map(self._one, np.array_split(x, min(self.streams, len(x)))))
            return np.concatenate([a for a, _ in outs]), np.concatenate([p for _, p in outs])
        return self._one(x)

    def map(self, batches):
        """``self(x)`` for each batch of the iterable ``batches``, in order, with up to :attr:`streams` batches
        running side by side (each whole, on one stream): the way to run many batches. Stopping early waits for
        the batches already running."""
        if self.streams == 1:
            for x in batches:
                yield self(x)
            return
        pool, running = self._executor(), collections.deque()
        try:
            for x in batches:
                running.append(pool.submit(self._one, self._check(x)))
                if len(running) > self.streams:  # every stream busy and one batch waiting: take the oldest
                    yield running.popleft().result()
            while running:
                yield running.popleft().result()
        finally:
            for job in running:
                job.cancel()
            for job in running:
                if not job.cancelled():
                    job.exception()  # wait; its error, if any, is the caller's to ignore (it stopped early)

    def _one(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(x) == 0:
            h, w = self.manifest.input_size
            empty = np.zeros((0, h, w), np.float32)
            return empty, empty.copy()
        amp, phase = self._run(x)
        if self.device_outputs and not isinstance(amp, np.ndarray):
            return amp, phase
        return np.asarray(amp, dtype=np.float32), np.asarray(phase, dtype=np.float32)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix=f"ptyfast-{self.name}")
        return self._pool

    def _close_streams(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def default_batch(self) -> int:
        """Inference batch when none is given: 128 on a GPU; 32 on the CPU, where larger batches are no faster
        and only cost memory (each holds its activations)."""
        return 128 if self.device == "cuda" else 32

    def close(self) -> None:
        """Release sessions, engines and device memory."""

    def describe(self) -> dict[str, str]:
        """Provenance: backend, precision, device, model file."""
        return {"backend": self.name, "precision": self.precision, "device": self.device,
                "model_file": str(self.model_path or ""), "architecture": self.manifest.architecture}

    def _check(self, x: np.ndarray) -> np.ndarray:
        from ptyfast.models.preprocess import input_channels

        h, w = self.manifest.input_size
        c = input_channels(self.manifest)
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1:] != (c, h, w):
            raise InputError(
                f"the {self.name} backend expects a (B, {c}, {h}, {w}) batch for '{self.manifest.architecture}', "
                f"got {x.shape}; preprocess the frames with ptyfast.models.preprocess first."
            )
        return np.ascontiguousarray(x, dtype=np.float32)

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.manifest.architecture} {self.precision} on {self.device}>"
