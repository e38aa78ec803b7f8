"""Inference backends: a batch of preprocessed patterns in, (amplitude, phase) out.

One small interface, :class:`Backend` (:mod:`~ptyfast.runtime.backends.interface`), with three implementations,
one module each:

* :class:`OnnxRuntimeBackend` (:mod:`~ptyfast.runtime.backends.onnxruntime_backend`) — ONNX Runtime, CPU or
  CUDA execution provider, fp32 / int8 (QDQ) / fp16 ONNX. Never imports torch.
* :class:`TensorRTBackend` (:mod:`~ptyfast.runtime.backends.tensorrt_backend`) — a cached, key-checked TensorRT
  engine (only where TensorRT and a GPU exist).
* :class:`TorchBackend` (:mod:`~ptyfast.runtime.backends.torch_backend`) — the checkpoint in PyTorch: on the
  CPU fp32 or bf16, BatchNorm folded, traced to TorchScript, channels-last; on CUDA eager with fp32 / bf16 /
  fp16 autocast.

On the CPU a backend runs several batches side by side (:func:`cpu_streams`, :meth:`Backend.map`); one call with
a large batch is split over the streams.

:func:`open_backend` (:mod:`~ptyfast.runtime.backends.choose`) opens the backend asked for, or picks one, and
says which and why; :mod:`~ptyfast.runtime.backends.bf16_check` decides when ``--precision auto`` runs bf16 and
checks its outputs against fp32 first.

The tunable constants (:data:`AUTO_BF16_FRAMES`, :data:`BF16_TOLERANCE`, :data:`AUTO_TORCH_CUDA_FRAMES`) live in
the modules that read them; setting one on this package (``backends.BF16_TOLERANCE = 0.0``) sets it there.
"""

from __future__ import annotations

import sys
import types

from ptyfast.runtime.backends import bf16_check, choose
from ptyfast.runtime.backends.bf16_check import (AUTO_BF16_FRAMES, BF16_TOLERANCE, auto_precision, bf16_agreement,
                                                 check_patterns)
from ptyfast.runtime.backends.choose import (AUTO, AUTO_TORCH_CUDA_FRAMES, BACKENDS, DEVICES, PRECISIONS,
                                             open_backend)
from ptyfast.runtime.backends.interface import (INPUT_NAME, MAX_STREAMS, OUTPUT_NAMES, Backend, cpu_streams,
                                                cpu_threads, has_module)
from ptyfast.runtime.backends.onnxruntime_backend import (ORT_DISTRIBUTIONS, ORT_PRECISIONS, OnnxRuntimeBackend,
                                                          import_onnxruntime, onnxruntime_conflict)
from ptyfast.runtime.backends.tensorrt_backend import TensorRTBackend, open_tensorrt
from ptyfast.runtime.backends.torch_backend import TORCH_PRECISIONS, TorchBackend, torch_sees_cuda

_TUNABLE = {"AUTO_BF16_FRAMES": bf16_check, "BF16_TOLERANCE": bf16_check, "AUTO_TORCH_CUDA_FRAMES": choose}


class _Package(types.ModuleType):
    """This package's module type: a tunable constant set here is set in the module that reads it."""

    def __setattr__(self, name, value) -> None:
        if name in _TUNABLE:
            setattr(_TUNABLE[name], name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = ["AUTO", "AUTO_BF16_FRAMES", "AUTO_TORCH_CUDA_FRAMES", "BACKENDS", "BF16_TOLERANCE", "Backend",
           "DEVICES", "INPUT_NAME", "MAX_STREAMS", "ORT_DISTRIBUTIONS", "ORT_PRECISIONS", "OUTPUT_NAMES",
           "OnnxRuntimeBackend", "PRECISIONS", "TORCH_PRECISIONS", "TensorRTBackend", "TorchBackend",
           "auto_precision", "bf16_agreement", "check_patterns", "cpu_streams", "cpu_threads", "has_module",
           "import_onnxruntime", "onnxruntime_conflict", "open_backend", "open_tensorrt", "torch_sees_cuda"]
