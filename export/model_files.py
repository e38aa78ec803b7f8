"""The model files a backend runs, made on demand and cached by content hash (``$PTYFAST_CACHE`` or
``~/.cache/ptyfast``): the fp32 ONNX exported from a checkpoint, and reduced-precision ONNX (static INT8 QDQ,
fp16/bf16) made from it. TensorRT engines are built in :mod:`ptyfast.export.tensorrt_engine`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ptyfast.errors import InputError
from ptyfast.models.manifest import file_hash
from ptyfast.models.pretrained import ModelSource, cache_dir


def fp32_onnx(source: ModelSource) -> Path:
    """The fp32 ONNX of a model: shipped/given, or exported from its checkpoint into the cache (needs torch)."""
    if source.onnx is not None:
        return source.onnx
    if source.checkpoint is None:
        raise InputError(f"model '{source.name}' has neither an ONNX file nor a checkpoint to export one from; "
                         "pass the .onnx or .pt file.")
    digest = file_hash(source.checkpoint)
    out = cache_dir("onnx", digest[:16]) / f"{source.manifest.architecture}.onnx"
    if out.is_file():
        return out
    if importlib.util.find_spec("torch") is None:
        raise InputError(f"exporting checkpoint {source.checkpoint} to ONNX needs PyTorch; install it "
                         "(pip install 'ptyfast[train]') or pass an exported .onnx file.")
    from ptyfast.export.onnx_export import export_onnx
    from ptyfast.models.checkpoint import load_checkpoint

    model, manifest = load_checkpoint(source.checkpoint)
    export_onnx(model, manifest, out, extra_metadata={"ptyfast.checkpoint_sha256": digest})
    return out


def reduced_onnx(source: ModelSource, precision: str) -> Path:
    """fp32 / int8 (QDQ, Conv only, calibrated on simulated patterns) / fp16 ONNX, cached by the fp32 hash."""
    fp32 = fp32_onnx(source)
    if precision == "fp32":
        return fp32
    if source.onnx is not None:  # shipped or user-given beside the fp32 file: reuse a pre-made one
        sibling = source.onnx.with_name(f"{source.onnx.stem}.{precision}.onnx")
        if sibling.is_file():
            return sibling
    digest = file_hash(fp32)
    out = cache_dir(precision, digest[:16]) / f"{fp32.stem}.{precision}.onnx"
    if out.is_file():
        return out
    from ptyfast.export import quantize

    if precision == "int8":
        quantize.quantize_int8(fp32, out)
    elif precision in ("fp16", "bf16"):
        quantize.convert_float(fp32, out, precision)
    else:
        raise InputError(f"unknown precision '{precision}'; use fp32, int8, fp16 or bf16.")
    return out
