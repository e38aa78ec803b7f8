"""The export stage (``ptyfast.export``): ONNX export + parity check, INT8/fp16 conversion, TensorRT engines.

Modules
-------
onnx_export
    torch → ONNX (dynamic batch, pinned opset, manifest in ``metadata_props``) and the parity report.
quantize
    Static INT8 (QDQ) quantisation with ONNX Runtime, calibrated on simulated patterns; fp16/bf16 ONNX.
tensorrt_engine
    TensorRT 10/11 engine build, timing cache, keyed engine cache with JSON sidecars (thin; lazy import).
samples
    Simulated, preprocessed diffraction patterns for calibration and parity checks (numpy only).
report
    The status table printed by ``ptyfast export``.

Only ``onnx_export`` needs torch; everything else runs with numpy, onnx and onnxruntime.
"""
