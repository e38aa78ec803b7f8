"""The torch backend: the checkpoint in PyTorch — on the CPU fp32 or bf16 with its BatchNorm folded, traced to
TorchScript, channels-last; on CUDA eager with fp32 / bf16 / fp16 autocast."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptyfast.allocator import keep_freed_memory
from ptyfast.errors import InputError, SetupError
from ptyfast.runtime.backends.interface import Backend, cpu_streams, cpu_threads, has_module

TORCH_PRECISIONS = ("fp32", "bf16", "fp16")
HOST_SLOTS = 3  # pinned input buffers in flight on CUDA (one filling, one copying, one spare)
HOST_SLOT_BYTES = 256 * 2**20  # batches above this (4,096 one-channel 128² fp32 patterns) are copied unpinned


class TorchBackend(Backend):
    """The checkpoint in PyTorch: fp32, or bf16/fp16 autocast; channels-last for bf16 on CPU.

    Parameters
    ----------
    checkpoint : str or Path
        ptyfast ``.pt`` checkpoint.
    device : {"cpu", "cuda"}
    precision : {"fp32", "bf16", "fp16"}
        fp16 needs CUDA.
    threads : int, optional
        CPU threads (default: the process's setting, :mod:`ptyfast.threads`), as :func:`cpu_streams` batches side
        by side with ``torch.set_num_threads`` each.

    On the CPU the model runs with its BatchNorm folded and traced to TorchScript
    (:func:`ptyfast.models.inference.inference_module`), in channels-last, the traced module cached on disk for
    the next run (:mod:`ptyfast.runtime.backends.torch_cache`; :attr:`cached`); :attr:`note` says when it could
    not be traced and runs eager.
    """

    name = "torch"
    supports_device_outputs = True

    def __init__(self, checkpoint: str | Path, *, device: str = "cpu", precision: str = "fp32",
                 threads: int | None = None) -> None:
        try:
            import torch
        except ModuleNotFoundError:
            raise SetupError("the torch backend needs PyTorch; install it (pip install 'ptyfast[train]') "
                             "or use --backend onnxruntime.") from None
        from ptyfast.models.checkpoint import load_checkpoint
        from ptyfast.models.inference import fold_batchnorm
        from ptyfast.runtime.backends.torch_cache import cached_inference_module

        if precision not in TORCH_PRECISIONS:
            raise InputError(f"the torch backend runs {', '.join(TORCH_PRECISIONS)}, not '{precision}'; "
                             "use --backend onnxruntime for int8.")
        if device == "cuda" and not torch.cuda.is_available():
            raise InputError("PyTorch sees no CUDA device; use --device cpu.")
        if precision == "fp16" and device != "cuda":
            raise InputError("fp16 on the torch backend needs CUDA; use --precision bf16 on the CPU.")
        if device == "cpu":
            self.streams, self._per_stream = cpu_streams(threads or cpu_threads())
            torch.set_num_threads(self._per_stream)
            keep_freed_memory()  # no fresh pages for every batch's activations (ptyfast.allocator)
        model, manifest = load_checkpoint(checkpoint)
        self._torch = torch
        self._channels_last = True  # the faster memory layout for these convolutions, traced or eager
        self._dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.manifest, self.device, self.precision = manifest, device, precision
        self.model_path = Path(checkpoint)
        self.note = None  # why the CPU path runs eager PyTorch, when it does
        self.cached = False  # the traced module came from the on-disk cache (ptyfast.runtime.backends.torch_cache)
        self.memory_note = None  # set when a batch did not fit in the GPU's memory and ran in parts
        self._ring = None  # pinned host buffers for the inputs (CUDA)
        if device == "cpu":
            self._model = fold_batchnorm(model)  # run_fp32's model
            from ptyfast.models.preprocess import input_channels

            example = torch.zeros((2, input_channels(manifest), *manifest.input_size), dtype=torch.float32)
            self._compiled, self.note, self.cached = cached_inference_module(
                checkpoint, model, example, dtype=self._dtype or torch.float32, channels_last=self._channels_last)
        else:
            model = model.to(device).to(memory_format=torch.channels_last)
            self._model = model.eval()
            self._compiled = None

    def _run(self, x: np.ndarray):
        """One batch; on a GPU that runs out of memory, the batch in halves (down to one pattern), said once in
        :attr:`memory_note`."""
        torch = self._torch
        try:
            return self._run_batch(x)
        except torch.cuda.OutOfMemoryError:
            if len(x) < 2:
                raise SetupError("the GPU ran out of memory for a single pattern; free the GPU (another process "
                                 "may hold its memory) or use --device cpu.") from None
            torch.cuda.empty_cache()
            self.memory_note = self.memory_note or (f"the GPU ran out of memory at a batch of {len(x)}; smaller "
                                                    "batches were run (give a smaller --batch)")
            (a0, p0), (a1, p1) = self._run(x[: len(x) // 2]), self._run(x[len(x) // 2 :])
            cat = torch.cat if isinstance(a0, torch.Tensor) else np.concatenate
            return cat([a0, a1]), cat([p0, p1])

    def _run_batch(self, x: np.ndarray):
        torch = self._torch
        if self.device == "cpu" and torch.get_num_threads() != self._per_stream:
            torch.set_num_threads(self._per_stream)  # ptyfast.threads.set_threads after opening must not oversubscribe
        if self.device == "cuda" and x.nbytes <= HOST_SLOT_BYTES:  # pinned staging: an asynchronous copy
            view, slot = self._host_ring().stage(x)
            t = view.to(self.device, non_blocking=True)
            self._ring.sent(slot)
        else:  # the CPU, or a batch too large to pin three copies of
            t = torch.from_numpy(x).to(self.device)
        if self._channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        if self._compiled is not None:  # folded, in its precision, traced: no autocast, no Python per layer
            with torch.inference_mode():
                amp, phase = self._compiled(t)
        else:
            with torch.inference_mode(), torch.autocast(self.device, dtype=self._dtype or torch.float32,
                                                         enabled=self._dtype is not None):
                amp, phase = self._model(t)
        if self.device_outputs and self.device == "cuda":
            return amp.float(), phase.float()  # CUDA tensors, for a stitch on the device (runtime.reconstruct)
        return amp.float().cpu().numpy(), phase.float().cpu().numpy()

    def _host_ring(self):
        if self._ring is None:
            from ptyfast.kernels.memory import HostRing

            torch = self._torch
            self._ring = HostRing(HOST_SLOTS, lambda shape: torch.empty(shape, dtype=torch.float32, pin_memory=True),
                                  torch.cuda.Event)
        return self._ring

    def noted(self, reason: str) -> str:
        """``reason``, and why this backend runs eager PyTorch when it could not be traced."""
        return f"{reason}; {self.note}" if self.note else reason

    def run_fp32(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One batch with autocast off (fp32 weights and activations), whatever this backend's precision."""
        torch = self._torch
        t = torch.from_numpy(self._check(x)).to(self.device)
        with torch.inference_mode():
            amp, phase = self._model(t)
        return amp.float().cpu().numpy(), phase.float().cpu().numpy()

    def close(self) -> None:
        self._close_streams()
        self._model = self._compiled = None


def torch_sees_cuda() -> bool:
    """torch is installed and sees a CUDA device (imports torch: ask only when it would be used)."""
    if not has_module("torch"):
        return False
    import torch

    return bool(torch.cuda.is_available())
