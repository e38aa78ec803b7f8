"""The ONNX Runtime backend: CPU or CUDA execution provider (providers filtered against
``onnxruntime.get_available_providers()``), fp32 / int8 (QDQ) / fp16 ONNX files. Never imports torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptyfast.errors import InputError, SetupError
from ptyfast.models.manifest import Manifest
from ptyfast.runtime.backends.interface import INPUT_NAME, OUTPUT_NAMES, Backend, cpu_streams, cpu_threads

ORT_PRECISIONS = ("fp32", "int8", "fp16")


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime session on the CPU or CUDA execution provider.

    Parameters
    ----------
    path : str or Path
        ONNX model (fp32, int8 QDQ or fp16 with fp32 I/O).
    manifest : Manifest
    device : {"cpu", "cuda"}
    precision : str
        Recorded for provenance (the file decides what runs).
    threads : int, optional
        CPU threads (default: all cores this process may use): on the CPU, :func:`cpu_streams` batches side by
        side, each on its own intra-op thread(s); on CUDA, the CPU provider's intra-op threads.
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, manifest: Manifest, *, device: str = "cpu", precision: str = "fp32",
                 threads: int | None = None) -> None:
        ort = import_onnxruntime()
        available = ort.get_available_providers()
        if device == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise SetupError("this onnxruntime has no CUDA provider; install onnxruntime-gpu "
                                 "(pip install 'ptyfast[gpu]') or use --device cpu.")
            providers: list = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        threads = threads or cpu_threads()
        self.streams, per_stream = cpu_streams(threads) if device == "cpu" else (1, threads)
        so = ort.SessionOptions()
        so.intra_op_num_threads = per_stream  # session.run is thread-safe: each stream runs on its own
        so.inter_op_num_threads = 1
        # no spin-waiting between operators: reading, preprocessing and stitching share the cores with inference,
        # and a thread spinning at a barrier would take their core (benchmarks/e2e_ratio.py measures the effect)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as exc:
            raise InputError(f"ONNX Runtime cannot load {path} ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200]}); re-export it with `ptyfast export`.") from None
        inputs = [i.name for i in self._session.get_inputs()]
        outputs = [o.name for o in self._session.get_outputs()]
        if inputs != [INPUT_NAME] or set(OUTPUT_NAMES) - set(outputs):
            raise InputError(f"{path} has inputs {inputs} and outputs {outputs}, not '{INPUT_NAME}' → "
                             f"{', '.join(OUTPUT_NAMES)}; export it with `ptyfast export`.")
        self.manifest, self.device, self.precision = manifest, device, precision
        self.model_path = Path(path)
        self.providers = self._session.get_providers()

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        amp, phase = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        return amp, phase

    def close(self) -> None:
        self._close_streams()
        self._session = None


ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")


def onnxruntime_conflict(installed=None) -> str | None:
    """One sentence when both the CPU and the GPU onnxruntime packages are installed: they share the
    ``onnxruntime`` module, so whichever was installed last silently wins (and may lack the CUDA provider)."""
    from importlib import metadata

    if installed is None:
        installed = []
        for name in ORT_DISTRIBUTIONS:
            try:
                installed.append((name, metadata.version(name)))
            except metadata.PackageNotFoundError:
                pass
    if len(installed) < 2:
        return None
    versions = ", ".join(f"{n} {v}" for n, v in installed)
    return (f"both ONNX Runtime packages are installed ({versions}) and overwrite each other's module; keep "
            "one: pip uninstall -y onnxruntime onnxruntime-gpu, then pip install onnxruntime (CPU) or "
            "onnxruntime-gpu (CUDA).")


def import_onnxruntime():
    """The ``onnxruntime`` module; one sentence when it is missing or two of its packages conflict."""
    conflict = onnxruntime_conflict()
    if conflict:
        raise SetupError(conflict)
    try:
        import onnxruntime as ort
    except ModuleNotFoundError:
        raise SetupError("ONNX Runtime is not installed; install it: pip install 'ptyfast[cpu]' "
                         "(or 'ptyfast[gpu]' for CUDA).") from None
    return ort
