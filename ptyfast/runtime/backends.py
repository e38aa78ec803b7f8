"""Inference backends: a batch of preprocessed patterns in, (amplitude, phase) out.

One small interface, :class:`Backend`, with three implementations:

* :class:`OnnxRuntimeBackend` — ONNX Runtime, CPU or CUDA execution provider (providers filtered against
  ``onnxruntime.get_available_providers()``), fp32 / int8 (QDQ) / fp16 ONNX. Never imports torch.
* :class:`TensorRTBackend` — a cached, key-checked TensorRT engine (only where TensorRT and a GPU exist).
* :class:`TorchBackend` — the checkpoint in PyTorch: on the CPU fp32 or bf16, BatchNorm folded, traced to
  TorchScript, channels-last; on CUDA eager with fp32 / bf16 / fp16 autocast.

On the CPU a backend runs several batches side by side (:func:`cpu_streams`, :meth:`Backend.map`); one call with
a large batch is split over the streams.

:func:`open_backend` resolves a model (see :func:`ptyfast.models.pretrained.resolve_model`), makes the files the
backend needs (ONNX export of a checkpoint, INT8 quantisation, TensorRT engine; each cached under
``$PTYFAST_CACHE`` or ``~/.cache/ptyfast`` by content hash), and with ``backend="auto"`` picks TensorRT, then
ONNX Runtime CUDA, then ONNX Runtime CPU, then torch, returning a sentence that says which and why.
"""

from __future__ import annotations

import collections
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ptyfast.allocator import keep_freed_memory
from ptyfast.choices import Backend as BackendChoice, Device, Precision
from ptyfast.errors import InputError
from ptyfast.models.manifest import Manifest, file_hash
from ptyfast.export.model_files import fp32_onnx, reduced_onnx
from ptyfast.models.pretrained import ModelSource, cache_dir, resolve_model

INPUT_NAME = "diffraction"
OUTPUT_NAMES = ("amplitude", "phase")
BACKENDS, DEVICES, PRECISIONS = BackendChoice.values(), Device.values(), Precision.values()
ORT_PRECISIONS = ("fp32", "int8", "fp16")
TORCH_PRECISIONS = ("fp32", "bf16", "fp16")


def cpu_threads() -> int:
    """Threads ptyfast computes with (:func:`ptyfast.threads.get`: ``--threads``, else the usable cores)."""
    from ptyfast import threads

    return threads.get()


#: Most batches a CPU backend runs side by side (:func:`cpu_streams`).
MAX_STREAMS = 8


def cpu_streams(threads: int) -> tuple[int, int]:
    """(streams, threads per stream) for ``threads`` CPU threads: batches run side by side, each on its own
    thread(s), rather than one batch at a time on every thread. A stream never waits for another, so when
    reading or stitching takes a core for a moment, one batch runs slower instead of every worker of a
    parallel region spinning at its barrier (PtyNet-S, torch bf16, 2 cores: model only 594 vs 573 patterns/s,
    reconstruct end to end 528 vs 458, medians of 6 alternated rounds). At most :data:`MAX_STREAMS` streams
    (each holds a batch's activations); beyond that each stream gets several threads. Measured on 2 cores only."""
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
        and only cost memory (ONNX Runtime fp32, PtyNet-S, one thread, this 2-core machine: 265–300 patterns/s
        for batches of 8 to 128 alike, but 277 MiB peak RSS at 32 against 895 MiB at 128)."""
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
        ort = _import_onnxruntime()
        available = ort.get_available_providers()
        if device == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise InputError("this onnxruntime has no CUDA provider; install onnxruntime-gpu "
                                 "(pip install 'ptyfast[gpu]') or use --device cpu.")
            providers: list = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        threads = threads or cpu_threads()
        self.streams, per_stream = cpu_streams(threads) if device == "cpu" else (1, threads)
        so = ort.SessionOptions()
        so.intra_op_num_threads = per_stream  # session.run is thread-safe: each stream runs on its own
        so.inter_op_num_threads = 1
        # no spin-waiting between operators: reading, preprocessing and stitching share the cores with inference
        # (model-only rate unchanged; end to end 0.81x, 0.81x -> 0.87x, 0.83x of it in two runs each on 2 cores,
        # benchmarks/e2e_ratio.py --rounds 3)
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
    (:func:`ptyfast.models.inference.inference_module`), in channels-last; :attr:`note` says when it could not be
    traced and runs eager.
    """

    name = "torch"

    def __init__(self, checkpoint: str | Path, *, device: str = "cpu", precision: str = "fp32",
                 threads: int | None = None) -> None:
        try:
            import torch
        except ModuleNotFoundError:
            raise InputError("the torch backend needs PyTorch; install it (pip install 'ptyfast[train]') "
                             "or use --backend onnxruntime.") from None
        from ptyfast.models.checkpoint import load_checkpoint
        from ptyfast.models.inference import fold_batchnorm, inference_module

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
        self._channels_last = True  # CPU fp32 traced: 280 vs 215 patterns/s in channels-last (2 threads)
        self._dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.manifest, self.device, self.precision = manifest, device, precision
        self.model_path = Path(checkpoint)
        self.note = None  # why the CPU path runs eager PyTorch, when it does
        if device == "cpu":
            self._model = fold_batchnorm(model)  # run_fp32's model
            from ptyfast.models.preprocess import input_channels

            example = torch.zeros((2, input_channels(manifest), *manifest.input_size), dtype=torch.float32)
            self._compiled, self.note = inference_module(model, example, dtype=self._dtype or torch.float32,
                                                         channels_last=self._channels_last)
        else:
            model = model.to(device).to(memory_format=torch.channels_last)
            self._model = model.eval()
            self._compiled = None

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        if self.device == "cpu" and torch.get_num_threads() != self._per_stream:
            torch.set_num_threads(self._per_stream)  # ptyfast.threads.set_threads after opening must not oversubscribe
        t = torch.from_numpy(x).to(self.device, non_blocking=True)
        if self._channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        if self._compiled is not None:  # folded, in its precision, traced: no autocast, no Python per layer
            with torch.inference_mode():
                amp, phase = self._compiled(t)
        else:
            with torch.inference_mode(), torch.autocast(self.device, dtype=self._dtype or torch.float32,
                                                         enabled=self._dtype is not None):
                amp, phase = self._model(t)
        return amp.float().cpu().numpy(), phase.float().cpu().numpy()

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


# -- making the files a backend needs ------------------------------------------------------------------------


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


def _import_onnxruntime():
    conflict = onnxruntime_conflict()
    if conflict:
        raise InputError(conflict)
    try:
        import onnxruntime as ort
    except ModuleNotFoundError:
        raise InputError("ONNX Runtime is not installed; install it: pip install 'ptyfast[cpu]' "
                         "(or 'ptyfast[gpu]' for CUDA).") from None
    return ort


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _torch_sees_cuda() -> bool:
    """torch is installed and sees a CUDA device (imports torch: ask only when it would be used)."""
    if not _has_module("torch"):
        return False
    import torch

    return bool(torch.cuda.is_available())


def _open_tensorrt(source: ModelSource, precision: str, batch) -> TensorRTBackend:
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
        TensorRT. ``auto`` (see :func:`auto_precision`): torch bf16 on a CPU with AVX-512 BF16 or AMX for a scan
        of at least :data:`AUTO_BF16_FRAMES` ``frames`` (any length with ``backend="torch"``) when its outputs
        agree with fp32 (:func:`bf16_agreement`), else fp32.
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
    from ptyfast.export.tensorrt_engine import gpu_info, tensorrt_version

    backend = BackendChoice.check(backend, "backend")
    device = Device.check(device, "device")
    auto = str(precision).strip().lower() == AUTO
    if not auto and str(precision).strip().lower() not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'; choose {AUTO}, {Precision.listing()}.")
    precision = "fp32" if auto else Precision.check(precision, "precision")
    source = model_spec if isinstance(model_spec, ModelSource) else resolve_model(model_spec)
    b: Backend

    gpu = gpu_info() if device != "cpu" else None
    if device == "cuda" and gpu is None:
        raise InputError("--device cuda was asked for but no NVIDIA GPU is visible; use --device cpu or auto.")
    on_gpu = gpu is not None
    if auto:
        bf16, why_not = auto_precision(source, backend, on_gpu, frames, threads)
        if bf16 is not None:
            return bf16, why_not
        if why_not:  # fp32, and why not bf16 beside the backend's own reason
            b, why = open_backend(source, backend, device, "fp32", threads=threads, batch=batch)
            return b, f"{why}; fp32 because {why_not}"

    if backend == "onnxruntime":
        if precision not in ORT_PRECISIONS:
            raise InputError(f"ONNX Runtime runs {', '.join(ORT_PRECISIONS)}, not '{precision}'; "
                             "use --backend torch (bf16 on CPU) or --backend tensorrt.")
        dev = "cuda" if on_gpu and "CUDAExecutionProvider" in _import_onnxruntime().get_available_providers() \
            else "cpu"
        if device == "cuda" and dev != "cuda":
            raise InputError("this onnxruntime has no CUDA provider; install onnxruntime-gpu or use --device cpu.")
        b = OnnxRuntimeBackend(reduced_onnx(source, precision), source.manifest, device=dev, precision=precision,
                               threads=threads)
        return b, f"onnxruntime-{dev}: requested"
    if backend == "torch":
        if source.checkpoint is None:
            raise InputError(f"the torch backend needs a .pt checkpoint, and model '{source.name}' has none; "
                             "use --backend onnxruntime.")
        b = TorchBackend(source.checkpoint, device="cuda" if on_gpu else "cpu", precision=precision,
                         threads=threads)
        return b, b.noted(f"torch-{b.device}: requested")
    if backend == "tensorrt":
        if not on_gpu:
            # say what is missing first: TensorRT itself, then the GPU
            from ptyfast.export.tensorrt_engine import require_gpu, require_tensorrt

            require_tensorrt()
            require_gpu()
        return _open_tensorrt(source, precision, batch), f"tensorrt: requested ({gpu[0] if gpu else ''})"

    # auto
    notes: list[str] = []
    if device == "cpu":
        notes.append("--device cpu")
    elif not on_gpu:
        notes.append("no CUDA device")
    trt_version = tensorrt_version() if device != "cpu" else None
    if device != "cpu" and trt_version is None:
        notes.append("tensorrt not installed")
    if gpu is not None and trt_version is not None:
        try:
            return _open_tensorrt(source, precision, batch), f"tensorrt: {gpu[0]} with TensorRT {trt_version}"
        except InputError as exc:
            notes.append(f"tensorrt failed ({exc})")
    has_ort = _has_module("onnxruntime")
    if not has_ort:
        notes.append("onnxruntime not installed")
    elif precision not in ORT_PRECISIONS:
        notes.append(f"onnxruntime has no {precision}")
    else:
        providers = _import_onnxruntime().get_available_providers()
        if on_gpu and "CUDAExecutionProvider" in providers:
            b = OnnxRuntimeBackend(reduced_onnx(source, precision), source.manifest, device="cuda",
                                   precision=precision, threads=threads)
            return b, "onnxruntime-cuda: " + "; ".join(notes or ["fastest available"])
        if on_gpu:
            notes.append("onnxruntime has no CUDA provider (install onnxruntime-gpu)")
            if precision in TORCH_PRECISIONS and source.checkpoint is not None and _has_module("torch"):
                if (frames or 0) < AUTO_TORCH_CUDA_FRAMES:
                    count = "the number of frames is unknown" if frames is None else f"{frames:,} frames are too few"
                    notes.append(f"{count} to repay torch-cuda's start-up (from {AUTO_TORCH_CUDA_FRAMES:,} frames)")
                elif _torch_sees_cuda():
                    b = TorchBackend(source.checkpoint, device="cuda", precision=precision, threads=threads)
                    return b, b.noted(f"torch-cuda: {'; '.join(notes)}; {frames:,} frames repay its start-up")
        if precision != "fp16":  # fp16 on CPU is slower than fp32: not an automatic choice
            try:
                b = OnnxRuntimeBackend(reduced_onnx(source, precision), source.manifest, device="cpu",
                                       precision=precision, threads=threads)
                return b, "onnxruntime-cpu: " + "; ".join(notes or ["fastest available"])
            except InputError as exc:
                if source.checkpoint is None:
                    raise
                notes.append(f"onnxruntime failed ({exc})")
        else:
            notes.append("onnxruntime fp16 needs CUDA")
    if source.checkpoint is not None and _has_module("torch"):
        b = TorchBackend(source.checkpoint, device="cuda" if on_gpu else "cpu", precision=precision, threads=threads)
        return b, b.noted(f"torch-{b.device}: " + "; ".join(notes))
    if not has_ort and not _has_module("torch"):
        raise InputError("neither ONNX Runtime nor PyTorch is installed; install one: pip install 'ptyfast[cpu]'.")
    raise InputError(f"no backend can run '{source.name}' at {precision} here ({'; '.join(notes)}); "
                     "try --precision fp32 or another --backend.")


AUTO = "auto"

#: Frames from which ``--precision auto`` runs torch bf16 rather than ONNX Runtime fp32 on a CPU with AVX-512 BF16
#: or AMX: torch takes ≈ 2 s longer to start (import, checkpoint, tracing), which its faster inference repays only
#: on a long enough scan. Measured, whole ``ptyfast reconstruct`` process, 2-core AMD EPYC with AVX-512 BF16 (no
#: AMX), both backends with two streams, alternated: 900 frames 4.85–4.88 s bf16 against 4.56–4.71 s fp32;
#: 1,600 frames 6.31–6.34 s against 6.46–7.27 s; 3,200 frames 9.7–10.1 s against 12.0–12.5 s; 6,400 frames
#: 14.8–17.8 s against 22.1–26.0 s.
AUTO_BF16_FRAMES = 1500

#: Frames from which ``--backend auto`` on a GPU runs torch there rather than ONNX Runtime on the CPU, where neither
#: TensorRT nor ONNX Runtime's CUDA provider is installed: torch's import and CUDA start-up cost ≈ 4 s, which its
#: faster inference repays only on a long scan. Measured, whole ``ptyfast reconstruct`` processes alternated
#: (``benchmarks/reconstruct_race.py``), NVIDIA H200 beside a 16-core Xeon (ONNX Runtime on all 16): 1,600 frames
#: 7.0–7.6 s torch-cuda against 3.7 s onnxruntime-cpu; 4,096 frames 8.2–8.4 s against 7.3–8.0 s (12.8–13.1 CPU-s
#: against 39–40): the lines cross near 4,700 frames, and sooner on a CPU with fewer cores.
AUTO_TORCH_CUDA_FRAMES = 5000

#: The largest relative RMS difference ‖c_bf16 − c_fp32‖ / ‖c_fp32‖ of the complex patches A·e^{iφ} on the lit
#: pixels that ``--precision auto`` accepts (the shipped PtyNet-S: 0.005).
BF16_TOLERANCE = 0.02


def auto_precision(source: ModelSource, backend: str, on_gpu: bool, frames: int | None, threads: int | None
                   ) -> tuple["TorchBackend | None", str]:
    """``--precision auto``: (an opened torch bf16 :class:`TorchBackend`, why) where that is the faster path and
    agrees with fp32, else (None, why not bf16; empty when bf16 was never a candidate: a GPU, ONNX Runtime asked)."""
    from ptyfast.machine import cpu_flags

    if on_gpu or backend not in ("auto", "torch"):
        return None, ""
    flags = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    if not flags:
        return None, "this CPU has neither AVX-512 BF16 nor AMX"
    if source.checkpoint is None or not _has_module("torch"):
        return None, "bf16 needs PyTorch and a .pt checkpoint"
    if backend == "auto" and (frames or 0) < AUTO_BF16_FRAMES:
        count = "the number of frames is unknown" if frames is None else f"{frames:,} frames are too few"
        return None, f"{count} to repay torch's start-up (bf16 from {AUTO_BF16_FRAMES:,} frames)"
    b = TorchBackend(source.checkpoint, device="cpu", precision="bf16", threads=threads)
    error = bf16_agreement(b)
    if error is None or error > BF16_TOLERANCE:
        b.close()
        return None, ("bf16 cannot be checked (no probe of the model's input size)" if error is None else
                      f"bf16 differs from fp32 by {error:.3f} (tolerance {BF16_TOLERANCE})")
    size = f"{frames:,} frames, " if frames else ""
    return b, b.noted(f"torch-cpu bf16: {'requested backend, ' if backend == 'torch' else ''}{size}"
                      f"{'/'.join(flags)} on this CPU, outputs within {error:.3f} of fp32")


def bf16_agreement(backend: "TorchBackend", n: int = 16) -> float | None:
    """Relative RMS difference of ``backend``'s bf16 outputs from fp32 (the same weights, autocast off) as complex
    patches A·e^{iφ} on the lit pixels (|P|² ≥ 10 % of its maximum), on ``n`` noise-free patterns of the bundled
    held-out cat faces under the model's probe (the bundled default probe when the model's is unknown); None
    when neither fits the model's input."""
    from ptyfast.models.preprocess import preprocess
    from ptyfast.physics.probe import default_probe, lit_pixels
    from ptyfast.runtime.reconstruct import model_probe

    probe = model_probe(backend.manifest, backend.model_path)
    probe = default_probe() if probe is None else probe
    if probe.shape != tuple(backend.manifest.input_size):
        return None
    photons = float(backend.manifest.probe_photons) or float(np.sum(np.abs(probe) ** 2))
    x = preprocess(check_patterns(probe, n, photons), backend.manifest, probe_power=photons, probe=probe)
    a16, p16 = backend(x)
    a32, p32 = backend.run_fp32(x)
    lit = lit_pixels(np.abs(probe) ** 2)
    c16, c32 = (a * np.exp(1j * p) for a, p in ((a16, p16), (a32, p32)))
    return float(np.linalg.norm((c16 - c32)[:, lit]) / max(np.linalg.norm(c32[:, lit]), 1e-30))


def check_patterns(probe: np.ndarray, n: int, photons: float) -> np.ndarray:
    """``n`` noise-free far-field patterns (n, H, W) of an object made from the bundled held-out cat faces, a
    raster at 75 % overlap under ``probe`` scaled to ``photons``."""
    from ptyfast.io.images import held_out_object
    from ptyfast.physics.scanpath import overlap_to_step
    from ptyfast.physics.simulate import simulate_scan

    h, w = probe.shape
    side = int(np.ceil(np.sqrt(n)))
    step = overlap_to_step(0.75, h)
    obj = held_out_object((h + step * side, w + step * side))
    pos = np.array([(i // side * step, i % side * step) for i in range(n)], float)
    return simulate_scan(obj, probe, pos, photons=photons).diffraction


__all__ = ["Backend", "OnnxRuntimeBackend", "TorchBackend", "TensorRTBackend", "open_backend", "auto_precision",
           "bf16_agreement", "AUTO_BF16_FRAMES", "BACKENDS", "DEVICES", "PRECISIONS", "cpu_threads"]
