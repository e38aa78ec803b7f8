"""Reduced-precision ONNX: static INT8 (QDQ) for CPUs, fp16/bf16 for GPUs and TensorRT 11.

INT8
    ``onnxruntime.quantization.quantize_static`` in QDQ format (uint8 activations, int8 weights), calibrated
    with MinMax on simulated, preprocessed patterns (:func:`ptyfast.export.samples.simulated_patterns`).
    ONNX Runtime's quantiser fails on grouped ``ConvTranspose`` with per-channel weights ("operands could not
    be broadcast together"), so by default only ``Conv`` nodes are quantised, per channel; the transposed
    convolutions and heads stay fp32. ``op_types=None, per_channel=False`` quantises everything per tensor.
fp16 / bf16
    :func:`convert_float` casts the float initialisers and the graph's internal float tensors to fp16/bf16
    and keeps the ``diffraction`` input and the outputs fp32 (a Cast at each end), so callers never change.
    This is what TensorRT 11 (strongly typed) needs for reduced precision; ONNX Runtime's CPU provider lacks
    fp16 kernels for several ops, so use it on CUDA / TensorRT.

Neither path imports torch.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptyfast.errors import InputError
from ptyfast.metrics import psnr
from ptyfast.models.manifest import Manifest

INPUT_NAME = "diffraction"
OUTPUT_NAMES = ("amplitude", "phase")


@dataclass
class ConvertedModel:
    """A reduced-precision ONNX file and how it was made."""

    path: Path
    precision: str
    seconds: float
    size: int
    settings: dict


def _manifest_of(proto) -> Manifest | None:
    props = {p.key: p.value for p in proto.metadata_props}
    return Manifest.from_json(props["ptyfast.manifest"]) if "ptyfast.manifest" in props else None


def _copy_metadata(src_proto, dst_proto, extra: dict[str, str]) -> None:
    from ptyfast.export.onnx_export import set_metadata

    props = {p.key: p.value for p in src_proto.metadata_props}
    props.update(extra)
    set_metadata(dst_proto, props)


def _save(proto, path: Path) -> None:
    from ptyfast.export.onnx_export import _atomic_save

    _atomic_save(proto, path)


class PatternReader:
    """``CalibrationDataReader`` over an (N, 1, H, W) float32 array in batches."""

    def __init__(self, x: np.ndarray, batch: int = 16) -> None:
        self._x = np.ascontiguousarray(x, dtype=np.float32)
        self._batch = batch
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._x):
            return None
        chunk = self._x[self._i : self._i + self._batch]
        self._i += self._batch
        return {INPUT_NAME: chunk}

    def rewind(self) -> None:
        self._i = 0


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    *,
    calibration: np.ndarray | None = None,
    n_calibration: int = 128,
    op_types: tuple[str, ...] | None = ("Conv",),
    per_channel: bool = True,
    seed: int = 0,
) -> ConvertedModel:
    """Static INT8 (QDQ) quantisation of an fp32 ptyfast ONNX model.

    Parameters
    ----------
    src : str or Path
        fp32 ONNX model with a ptyfast manifest in its metadata.
    dst : str or Path
        Output path (atomic write; the manifest and ``ptyfast.precision = int8`` go into its metadata).
    calibration : numpy.ndarray, optional
        (N, 1, H, W) float32 preprocessed patterns; default ``n_calibration`` simulated ones.
    n_calibration : int
        Number of simulated calibration patterns when ``calibration`` is not given.
    op_types : tuple of str or None
        Node types to quantise (default ``("Conv",)``; ``None`` = every type the quantiser supports).
    per_channel : bool
        Per-output-channel weight scales (the quantiser fails on grouped ConvTranspose per channel).
    seed : int
        Seed of the simulated calibration patterns.

    Returns
    -------
    ConvertedModel
    """
    import onnx

    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ModuleNotFoundError:
        raise InputError("INT8 quantisation needs onnxruntime and onnx; install: pip install 'ptyfast[cpu]'.") from None

    src, dst = Path(src), Path(dst)
    t0 = time.perf_counter()
    src_proto = onnx.load(str(src))
    manifest = _manifest_of(src_proto)
    if manifest is None:
        raise InputError(f"{src} carries no ptyfast manifest; export it with `ptyfast export` first.")
    if calibration is None:
        from ptyfast.export.samples import simulated_patterns

        calibration = simulated_patterns(n_calibration, manifest, seed=seed)
    settings = {"format": "QDQ", "activations": "uint8", "weights": "int8", "calibration": "minmax",
                "op_types": list(op_types) if op_types else "all", "per_channel": per_channel,
                "n_calibration": int(len(calibration)), "calibration_data": "simulated" if seed is not None else ""}
    with tempfile.TemporaryDirectory(prefix="ptyfast-q-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        out = Path(tmp) / "q.onnx"
        # symbolic shape inference lives in onnxruntime.tools, which imports torch when installed; ONNX shape
        # inference is enough here (only the batch axis is dynamic)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        kwargs = {"op_types_to_quantize": list(op_types)} if op_types else {}
        try:
            quantize_static(
                str(pre), str(out), PatternReader(calibration), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                calibrate_method=CalibrationMethod.MinMax, **kwargs,
            )
        except ValueError as exc:
            raise InputError(
                f"INT8 quantisation of {src.name} failed ({exc}); quantise Conv nodes only or use per-tensor scales."
            ) from None
        proto = onnx.load(str(out))
    _copy_metadata(src_proto, proto, {"ptyfast.precision": "int8", "ptyfast.quantization": json.dumps(settings)})
    onnx.checker.check_model(proto)
    _save(proto, dst)
    return ConvertedModel(dst, "int8", time.perf_counter() - t0, dst.stat().st_size, settings)


def _bf16_tensor(name: str, arr: np.ndarray):
    import ml_dtypes
    from onnx import numpy_helper

    return numpy_helper.from_array(arr.astype(ml_dtypes.bfloat16), name)


def convert_float(src: str | Path, dst: str | Path, precision: str = "fp16") -> ConvertedModel:
    """Cast an fp32 ONNX model to fp16 or bf16 inside, keeping fp32 input and outputs.

    Parameters
    ----------
    src, dst : str or Path
        fp32 source and output (atomic write).
    precision : {"fp16", "bf16"}

    Returns
    -------
    ConvertedModel
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if precision not in ("fp16", "bf16"):
        raise InputError(f"unknown float precision '{precision}'; use fp16 or bf16.")
    t0 = time.perf_counter()
    elem = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.BFLOAT16
    proto = onnx.load(str(src))
    graph = proto.graph
    if graph.node and any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node):
        raise InputError(f"{src} is already quantised; convert the fp32 model instead.")

    def cast(arr: np.ndarray, name: str):
        if precision == "fp16":
            return numpy_helper.from_array(arr.astype(np.float16), name)
        return _bf16_tensor(name, arr)

    # inputs that ONNX requires to stay float32 whatever the data type (Resize roi and scales)
    keep = {node.input[k] for node in graph.node if node.op_type == "Resize" for k in (1, 2)
            if k < len(node.input) and node.input[k]}
    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT and init.name not in keep:
            graph.initializer[i].CopyFrom(cast(numpy_helper.to_array(init), init.name))
    for node in graph.node:
        if node.op_type == "Constant" and not set(node.output) & keep:
            for attr in node.attribute:
                if attr.t and attr.t.data_type == TensorProto.FLOAT:
                    attr.t.CopyFrom(cast(numpy_helper.to_array(attr.t), attr.t.name))
        for attr in node.attribute:  # Cast(to=float) inside the graph → the reduced type
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = elem
    # fp32 at the edges: diffraction → Cast → (old name used inside); outputs ← Cast ← renamed producers
    in_name = graph.input[0].name
    inner_in = f"{in_name}_{precision}"
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == in_name:
                node.input[k] = inner_in
    casts_in = [helper.make_node("Cast", [in_name], [inner_in], to=elem, name=f"cast_in_{precision}")]
    casts_out = []
    for out in graph.output:
        inner = f"{out.name}_{precision}"
        for node in graph.node:
            for k, name in enumerate(node.output):
                if name == out.name:
                    node.output[k] = inner
        casts_out.append(helper.make_node("Cast", [inner], [out.name], to=TensorProto.FLOAT,
                                          name=f"cast_out_{out.name}"))
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale fp32 annotations; shape inference re-derives them
    src_proto = onnx.load(str(src), load_external_data=False)
    _copy_metadata(src_proto, proto, {"ptyfast.precision": precision})
    proto = onnx.shape_inference.infer_shapes(proto)
    onnx.checker.check_model(proto)
    dst = Path(dst)
    _save(proto, dst)
    return ConvertedModel(dst, precision, time.perf_counter() - t0, dst.stat().st_size, {"io": "fp32"})


def compare_models(ref_path: str | Path, test_path: str | Path, x: np.ndarray, manifest: Manifest,
                   *, threads: int | None = None) -> dict[str, float]:
    """Patch-level accuracy of ``test`` against ``ref`` (both ONNX, CPU) on the inputs ``x``.

    Returns
    -------
    dict
        ``max_abs_<out>``, ``mean_abs_<out>`` and ``psnr_<out>`` (dB; the data range is the manifest's
        amplitude range span for amplitude and the phase range span for phase) for both outputs.
    """
    from ptyfast.export.onnx_export import ort_session

    ref = ort_session(ref_path, threads=threads).run(list(OUTPUT_NAMES), {INPUT_NAME: x})
    got = ort_session(test_path, threads=threads).run(list(OUTPUT_NAMES), {INPUT_NAME: x})
    ranges = {"amplitude": manifest.amplitude_range, "phase": manifest.phase_range}
    out: dict[str, float] = {}
    for name, r, g in zip(OUTPUT_NAMES, ref, got):
        d = np.abs(g.astype(np.float64) - r.astype(np.float64))
        out[f"max_abs_{name}"] = float(d.max())
        out[f"mean_abs_{name}"] = float(d.mean())
        lo, hi = ranges[name]
        out[f"psnr_{name}"] = float(psnr(r, g, hi - lo))
    return out


def throughput(path: str | Path, x: np.ndarray, *, threads: int | None = None, repeats: int = 5) -> float:
    """Model-only patterns/s of an ONNX model on the CPU provider (best of ``repeats`` after one warm-up)."""
    from ptyfast.export.onnx_export import ort_session

    sess = ort_session(path, threads=threads)
    feed = {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)}
    sess.run(None, feed)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, feed)
        best = min(best, time.perf_counter() - t)
    return len(x) / best


__all__ = ["ConvertedModel", "PatternReader", "quantize_int8", "convert_float", "psnr", "compare_models",
           "throughput"]
