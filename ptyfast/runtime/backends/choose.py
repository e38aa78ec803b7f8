"""Choosing and opening a backend: :func:`open_backend`.

It resolves a model (:func:`ptyfast.models.pretrained.resolve_model`), makes the files the backend needs (ONNX
export of a checkpoint, INT8 quantisation, TensorRT engine; each cached under ``$PTYFAST_CACHE`` or
``~/.cache/ptyfast`` by content hash) and opens the backend asked for — or, with ``backend="auto"``, the first
that can run here of TensorRT, ONNX Runtime CUDA, torch on the GPU (long scans), ONNX Runtime CPU and torch,
returning a sentence that says which and why. A backend that cannot run here (not installed, no device, a
model file it cannot build) is passed over with a note; a failure to write (a full disk) is not.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptyfast.choices import Backend as BackendChoice, Device, Precision
from ptyfast.errors import InputError, SetupError
from ptyfast.export.model_files import reduced_onnx
from ptyfast.models.pretrained import ModelSource, resolve_model
from ptyfast.runtime.backends.bf16_check import auto_precision
from ptyfast.runtime.backends.interface import Backend, has_module
from ptyfast.runtime.backends.onnxruntime_backend import ORT_PRECISIONS, OnnxRuntimeBackend, import_onnxruntime
from ptyfast.runtime.backends.tensorrt_backend import open_tensorrt
from ptyfast.runtime.backends.torch_backend import TORCH_PRECISIONS, TorchBackend, torch_sees_cuda

BACKENDS, DEVICES, PRECISIONS = BackendChoice.values(), Device.values(), Precision.values()
AUTO = "auto"

#: Frames from which ``--backend auto`` on a GPU runs torch there rather than ONNX Runtime on the CPU, where neither
#: TensorRT nor ONNX Runtime's CUDA provider is installed: torch's import and CUDA start-up cost a few seconds,
#: which its faster inference repays only on a long scan (measured with ``benchmarks/reconstruct_race.py``; the
#: crossing comes sooner on a CPU with fewer cores).
AUTO_TORCH_CUDA_FRAMES = 5000

#: What a backend that cannot run here raises; the automatic choice notes it and tries the next one.
UNAVAILABLE = (InputError, SetupError)


@dataclass
class _Request:
    """What the caller asked for, checked, and what this machine has."""

    source: ModelSource
    device: str  # "auto", "cpu" or "cuda"
    precision: str
    gpu: tuple | None  # ptyfast.export.tensorrt_engine.gpu_info(): (name, ...) of the visible GPU, or None
    threads: int | None
    batch: str | tuple[int, int, int] | None
    frames: int | None

    @property
    def on_gpu(self) -> bool:
        return self.gpu is not None


def open_backend(
    model_spec=None,
    backend: str = "auto",
    device: str = "auto",
    precision: str = "fp32",
    *,
    threads: int | None = None,
    batch: str | tuple[int, int, int] | None = None,
    frames: int | None = None,
) -> tuple[Backend, str]:
    """Open a model on a backend.

    Parameters
    ----------
    model_spec : str, path, ModelSource or None
        Shipped name, ``.pt`` / ``.onnx`` / ``.engine`` path or folder (default: the shipped ``ptynet-s``).
    backend : {"auto", "onnxruntime", "tensorrt", "torch"}
        ``auto`` picks TensorRT (GPU + TensorRT + an engine it can build), then ONNX Runtime CUDA, then torch
        on the GPU (a scan of at least :data:`AUTO_TORCH_CUDA_FRAMES` ``frames``), then ONNX Runtime CPU, then
        torch.
    device : {"auto", "cpu", "cuda"}
        ``auto`` uses a GPU when one is visible.
    precision : {"auto", "fp32", "fp16", "bf16", "int8"}
        int8 on ONNX Runtime is the static QDQ model (made and cached on first use); bf16 runs on torch or
        TensorRT. ``auto`` (see :func:`~ptyfast.runtime.backends.bf16_check.auto_precision`): torch bf16 on a
        CPU with AVX-512 BF16 or AMX for a scan of at least
        :data:`~ptyfast.runtime.backends.bf16_check.AUTO_BF16_FRAMES` ``frames`` (any length with
        ``backend="torch"``) when its outputs agree with fp32, else fp32.
    threads : int, optional
        CPU threads (ONNX Runtime intra-op / torch); default all cores.
    batch : "MIN:OPT:MAX", optional
        TensorRT optimisation profile.

    Returns
    -------
    (Backend, str)
        The backend and a sentence naming it and why it was chosen, e.g.
        ``"onnxruntime-cpu: no CUDA device; tensorrt not installed"``.
    """
    backend, device, precision, auto = _checked(backend, device, precision)
    source = model_spec if isinstance(model_spec, ModelSource) else resolve_model(model_spec)
    request = _Request(source, device, precision, _visible_gpu(device), threads, batch, frames)
    why_not_bf16 = ""
    if auto:
        bf16, why_not_bf16 = auto_precision(source, backend, request.on_gpu, frames, threads)
        if bf16 is not None:
            return bf16, why_not_bf16
    opened, why = (_automatic if backend == AUTO else _REQUESTED[backend])(request)
    return opened, f"{why}; fp32 because {why_not_bf16}" if why_not_bf16 else why


def _checked(backend: str, device: str, precision: str) -> tuple[str, str, str, bool]:
    """(backend, device, precision, precision was auto), each checked against its choices; ``auto`` precision
    stands for fp32 unless bf16 is taken."""
    backend = BackendChoice.check(backend, "backend")
    device = Device.check(device, "device")
    auto = str(precision).strip().lower() == AUTO
    if not auto and str(precision).strip().lower() not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'; choose {AUTO}, {Precision.listing()}.")
    return backend, device, "fp32" if auto else Precision.check(precision, "precision"), auto


def _visible_gpu(device: str) -> tuple | None:
    """The GPU to run on (None with ``--device cpu`` or when none is visible); ``--device cuda`` without one is
    refused."""
    from ptyfast.export.tensorrt_engine import gpu_info

    gpu = gpu_info() if device != "cpu" else None
    if device == "cuda" and gpu is None:
        raise InputError("--device cuda was asked for but no NVIDIA GPU is visible; use --device cpu or auto.")
    return gpu


# -- a backend asked for by name -------------------------------------------------------------------------------


def _requested_onnxruntime(r: _Request) -> tuple[Backend, str]:
    if r.precision not in ORT_PRECISIONS:
        raise InputError(f"ONNX Runtime runs {', '.join(ORT_PRECISIONS)}, not '{r.precision}'; "
                         "use --backend torch (bf16 on CPU) or --backend tensorrt.")
    cuda = r.on_gpu and "CUDAExecutionProvider" in import_onnxruntime().get_available_providers()
    if r.device == "cuda" and not cuda:
        raise SetupError("this onnxruntime has no CUDA provider; install onnxruntime-gpu or use --device cpu.")
    dev = "cuda" if cuda else "cpu"
    b = OnnxRuntimeBackend(reduced_onnx(r.source, r.precision), r.source.manifest, device=dev,
                           precision=r.precision, threads=r.threads)
    return b, f"onnxruntime-{dev}: requested"


def _requested_torch(r: _Request) -> tuple[Backend, str]:
    if r.source.checkpoint is None:
        raise InputError(f"the torch backend needs a .pt checkpoint, and model '{r.source.name}' has none; "
                         "use --backend onnxruntime.")
    b = TorchBackend(r.source.checkpoint, device="cuda" if r.on_gpu else "cpu", precision=r.precision,
                     threads=r.threads)
    return b, b.noted(f"torch-{b.device}: requested")


def _requested_tensorrt(r: _Request) -> tuple[Backend, str]:
    if not r.on_gpu:
        # say what is missing first: TensorRT itself, then the GPU
        from ptyfast.export.tensorrt_engine import require_gpu, require_tensorrt

        require_tensorrt()
        require_gpu()
    return open_tensorrt(r.source, r.precision, r.batch), f"tensorrt: requested ({r.gpu[0] if r.gpu else ''})"


_REQUESTED = {"onnxruntime": _requested_onnxruntime, "torch": _requested_torch, "tensorrt": _requested_tensorrt}


# -- the automatic choice --------------------------------------------------------------------------------------


def _automatic(r: _Request) -> tuple[Backend, str]:
    """The first backend of the automatic order that can run here, and why the ones before it could not."""
    from ptyfast.export.tensorrt_engine import tensorrt_version

    notes: list[str] = []
    if r.device == "cpu":
        notes.append("--device cpu")
    elif not r.on_gpu:
        notes.append("no CUDA device")
    trt_version = tensorrt_version() if r.device != "cpu" else None
    if r.device != "cpu" and trt_version is None:
        notes.append("tensorrt not installed")
    if r.on_gpu and trt_version is not None:
        try:
            return open_tensorrt(r.source, r.precision, r.batch), f"tensorrt: {r.gpu[0]} with TensorRT {trt_version}"
        except UNAVAILABLE as exc:
            notes.append(f"tensorrt failed ({exc})")
    has_ort = has_module("onnxruntime")
    opened = _auto_onnxruntime(r, notes) if has_ort else None
    if not has_ort:
        notes.append("onnxruntime not installed")
    if opened is not None:
        return opened
    return _auto_torch(r, notes, has_ort)


def _auto_onnxruntime(r: _Request, notes: list[str]) -> tuple[Backend, str] | None:
    """ONNX Runtime on the GPU, else (from enough frames) torch on the GPU, else ONNX Runtime on the CPU; None
    (with a note) when none of them runs ``r``."""
    if r.precision not in ORT_PRECISIONS:
        notes.append(f"onnxruntime has no {r.precision}")
        return None
    providers = import_onnxruntime().get_available_providers()
    if r.on_gpu and "CUDAExecutionProvider" in providers:
        b = OnnxRuntimeBackend(reduced_onnx(r.source, r.precision), r.source.manifest, device="cuda",
                               precision=r.precision, threads=r.threads)
        return b, "onnxruntime-cuda: " + "; ".join(notes or ["fastest available"])
    if r.on_gpu:
        notes.append("onnxruntime has no CUDA provider (install onnxruntime-gpu)")
        opened = _auto_torch_cuda(r, notes)
        if opened is not None:
            return opened
    if r.precision == "fp16":  # fp16 on the CPU is slower than fp32: not an automatic choice
        notes.append("onnxruntime fp16 needs CUDA")
        return None
    try:
        b = OnnxRuntimeBackend(reduced_onnx(r.source, r.precision), r.source.manifest, device="cpu",
                               precision=r.precision, threads=r.threads)
        return b, "onnxruntime-cpu: " + "; ".join(notes or ["fastest available"])
    except UNAVAILABLE as exc:
        if r.source.checkpoint is None:
            raise
        notes.append(f"onnxruntime failed ({exc})")
        return None


def _auto_torch_cuda(r: _Request, notes: list[str]) -> tuple[Backend, str] | None:
    """Torch on the GPU for a scan long enough to repay its start-up (:data:`AUTO_TORCH_CUDA_FRAMES`)."""
    if r.precision not in TORCH_PRECISIONS or r.source.checkpoint is None or not has_module("torch"):
        return None
    if (r.frames or 0) < AUTO_TORCH_CUDA_FRAMES:
        count = "the number of frames is unknown" if r.frames is None else f"{r.frames:,} frames are too few"
        notes.append(f"{count} to repay torch-cuda's start-up (from {AUTO_TORCH_CUDA_FRAMES:,} frames)")
        return None
    if not torch_sees_cuda():
        return None
    b = TorchBackend(r.source.checkpoint, device="cuda", precision=r.precision, threads=r.threads)
    return b, b.noted(f"torch-cuda: {'; '.join(notes)}; {r.frames:,} frames repay its start-up")


def _auto_torch(r: _Request, notes: list[str], has_ort: bool) -> tuple[Backend, str]:
    """The last resort: torch (on the GPU when there is one), or one sentence on why nothing runs."""
    if r.source.checkpoint is not None and has_module("torch"):
        b = TorchBackend(r.source.checkpoint, device="cuda" if r.on_gpu else "cpu", precision=r.precision,
                         threads=r.threads)
        return b, b.noted(f"torch-{b.device}: " + "; ".join(notes))
    if not has_ort and not has_module("torch"):
        raise SetupError("neither ONNX Runtime nor PyTorch is installed; install one: pip install 'ptyfast[cpu]'.")
    raise InputError(f"no backend can run '{r.source.name}' at {r.precision} here ({'; '.join(notes)}); "
                     "try --precision fp32 or another --backend.")
