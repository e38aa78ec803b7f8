"""The TensorRT backend: a cached, key-checked engine (:mod:`ptyfast.export.tensorrt_engine`), only where
TensorRT and an NVIDIA GPU exist."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptyfast.export.model_files import fp32_onnx
from ptyfast.models.manifest import Manifest, file_hash
from ptyfast.models.pretrained import ModelSource, cache_dir
from ptyfast.runtime.backends.interface import Backend


class TensorRTBackend(Backend):
    """A key-checked TensorRT engine (see :mod:`ptyfast.export.tensorrt_engine`)."""

    name = "tensorrt"

    def __init__(self, engine: str | Path, manifest: Manifest, *, precision: str) -> None:
        from ptyfast.export.tensorrt_engine import TensorRTRunner

        self._runner = TensorRTRunner(engine)
        self.manifest, self.device, self.precision = manifest, "cuda", precision
        self.model_path = Path(engine)

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._runner(x)

    def close(self) -> None:
        self._runner.close()


def open_tensorrt(source: ModelSource, precision: str, batch) -> TensorRTBackend:
    """A TensorRT backend for ``source``: its engine, or one built from its fp32 ONNX and cached under the ONNX's
    hash (``batch``: the optimisation profile MIN:OPT:MAX)."""
    from ptyfast.export import tensorrt_engine as te

    te.require_tensorrt()
    te.require_gpu()
    if source.engine is not None:
        onnx_path = source.onnx
        engine = source.engine
    else:
        onnx_path = fp32_onnx(source)
        engine = cache_dir("tensorrt") / f"{onnx_path.stem}-{precision}-{file_hash(onnx_path)[:12]}.engine"
    engine, _ = te.ensure_engine(engine, onnx_path=onnx_path, manifest=source.manifest, precision=precision,
                                 batch=te.parse_batch(batch) if batch is not None else None)
    return TensorRTBackend(engine, source.manifest, precision=precision)
