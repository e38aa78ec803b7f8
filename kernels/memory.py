"""Explicit device memory for the reconstruct pipeline: pinned host buffers, a stream, DLPack interop.

Nothing here imports CuPy, torch or onnxruntime at module import time.

* :class:`PinnedStager` — a pinned (page-locked) host buffer and a non-blocking CUDA stream: copy a
  chunk of diffraction frames into the pinned buffer, then ``cudaMemcpyAsync`` it to the device on
  the stream, so the upload overlaps the previous chunk's compute.
* :class:`HostRing` — reusable (pinned) host buffers for batches sent to the device, each reused only once its
  asynchronous copy has completed (an event per slot).
* DLPack helpers — hand arrays to torch / ONNX Runtime without copies: ``to_torch`` / ``from_torch``
  (CuPy ↔ torch CUDA or numpy ↔ torch CPU, zero copy), ``to_ortvalue`` (``OrtValue.from_dlpack``
  where the installed onnxruntime has it) and ``bind_array`` (IOBinding by pointer: the documented,
  always-available zero-copy path for CPU and CUDA buffers).
"""

from __future__ import annotations

import numpy as np


def _is_cupy(a) -> bool:
    return type(a).__module__.startswith("cupy")


class PinnedStager:
    """Pinned host staging buffer + stream for host → device uploads of fixed-shape chunks.

    Parameters
    ----------
    shape : tuple, the largest chunk, e.g. (batch, H, W)
    dtype : numpy dtype of the chunk (e.g. float32 intensities)

    Notes
    -----
    ``upload(chunk)`` copies ``chunk`` into the pinned buffer (host memcpy), then enqueues an async
    copy to a device array on :attr:`stream` and returns that array; kernels launched on the same
    stream see it in order. Call :meth:`synchronize` before reusing the pinned buffer from the host
    (``upload`` does it for you at its start).
    """

    def __init__(self, shape, dtype):
        import cupy

        self._cupy = cupy
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self._mem = cupy.cuda.alloc_pinned_memory(nbytes)
        self.host = np.frombuffer(self._mem, self.dtype, int(np.prod(self.shape))).reshape(self.shape)
        self.stream = cupy.cuda.Stream(non_blocking=True)

    def upload(self, chunk):
        """Device copy (CuPy array) of ``chunk`` (host array, leading dim ≤ ``shape[0]``), async on the stream."""
        chunk = np.asarray(chunk, self.dtype)
        if chunk.shape[1:] != self.shape[1:] or chunk.shape[0] > self.shape[0]:
            raise ValueError(f"chunk has shape {chunk.shape}; this stager holds at most {self.shape}")
        self.stream.synchronize()  # the previous async copy has left the pinned buffer
        view = self.host[: chunk.shape[0]]
        np.copyto(view, chunk)
        with self.stream:
            dev = self._cupy.empty(chunk.shape, self.dtype)
            dev.set(view, stream=self.stream)
        return dev

    def synchronize(self):
        self.stream.synchronize()


class HostRing:
    """A ring of reusable host staging buffers for host → device copies of batches (what the torch CUDA backend
    sends its inputs through): a batch is copied into the next slot (pinned memory, so the copy to the device
    can run asynchronously), the caller starts the device copy and calls :meth:`sent`, which records an event
    behind it; a slot is overwritten only after its event has completed, so ``slots`` copies can be in flight.

    Parameters
    ----------
    slots : int
        Buffers in the ring (≥ 1).
    make_buffer : callable
        ``make_buffer(shape) → tensor``: a host buffer (e.g. ``torch.empty(shape, pin_memory=True)``), made when
        a slot is first used or a batch outgrows it.
    make_event : callable
        ``make_event() → event`` with ``record()`` and ``synchronize()`` (e.g. ``torch.cuda.Event``).
    """

    def __init__(self, slots: int, make_buffer, make_event) -> None:
        if slots < 1:
            raise ValueError("a host ring needs at least one slot")
        self._buffers: list = [None] * slots
        self._events: list = [None] * slots
        self._make_buffer, self._make_event = make_buffer, make_event
        self._next = 0
        self.allocations = 0  # buffers made so far (one per slot when the batch shape does not change)

    def stage(self, x: np.ndarray):
        """``(view, slot)``: ``x`` copied into the next slot's buffer (its first ``len(x)`` rows)."""
        slot = self._next
        self._next = (slot + 1) % len(self._buffers)
        if self._events[slot] is not None:
            self._events[slot].synchronize()  # its last device copy has left the buffer
            self._events[slot] = None
        buf = self._buffers[slot]
        if buf is None or buf.shape[0] < len(x) or tuple(buf.shape[1:]) != x.shape[1:]:
            buf = self._buffers[slot] = self._make_buffer(x.shape)
            self.allocations += 1
        view = buf[: len(x)]
        np.copyto(view.numpy(), x, casting="same_kind")
        return view, slot

    def sent(self, slot: int) -> None:
        """Record an event behind the device copy just started from ``slot``'s buffer."""
        event = self._make_event()
        event.record()
        self._events[slot] = event


# ----------------------------------------------------------------------------------------- DLPack
def to_torch(a):
    """A torch tensor sharing ``a``'s memory (CuPy → CUDA tensor, numpy → CPU tensor); no copy."""
    import torch

    return torch.from_dlpack(a)


def from_torch(t):
    """A CuPy (CUDA tensor) or numpy (CPU tensor) array sharing ``t``'s memory; no copy."""
    if t.device.type == "cuda":
        import cupy

        return cupy.from_dlpack(t)
    return np.from_dlpack(t.detach())


def to_ortvalue(a):
    """An ``onnxruntime.OrtValue`` over ``a``'s memory via DLPack (no copy).

    Raises
    ------
    RuntimeError if this onnxruntime build lacks ``OrtValue.from_dlpack``; use :func:`bind_array`.
    """
    import onnxruntime as ort

    if not hasattr(ort.OrtValue, "from_dlpack"):
        raise RuntimeError("this onnxruntime has no OrtValue.from_dlpack; bind buffers with kernels.memory.bind_array")
    return ort.OrtValue.from_dlpack(a)


def bind_array(io_binding, name: str, a, *, output: bool = False):
    """Bind a C-contiguous numpy or CuPy array to an ONNX Runtime IOBinding input/output by pointer.

    Zero copy: ONNX Runtime reads (or writes) ``a``'s memory directly. The array must stay alive
    and unchanged until ``session.run_with_iobinding`` returns.

    Parameters
    ----------
    io_binding : onnxruntime.IOBinding
    name : graph input (or output, with ``output=True``) name
    a : C-contiguous numpy array (device 'cpu') or CuPy array (device 'cuda', its device id)
    """
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: array must be C-contiguous for zero-copy binding (use ascontiguousarray)")
    if _is_cupy(a):
        device, device_id, ptr = "cuda", int(a.device.id), int(a.data.ptr)
    else:
        device, device_id, ptr = "cpu", 0, int(a.ctypes.data)
    bind = io_binding.bind_output if output else io_binding.bind_input
    bind(name, device, device_id, np.dtype(a.dtype).type, list(a.shape), ptr)
