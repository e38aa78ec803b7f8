"""TensorRT engines from ptyfast ONNX files: build, cache, check, run. Thin on purpose.

Written to the documented TensorRT 10 and 11 Python APIs (``trt.Builder``, ``create_network``,
``trt.OnnxParser``, ``create_builder_config``, ``set_memory_pool_limit``, optimisation profiles,
``ITimingCache``, ``build_serialized_network``, ``trt.Runtime.deserialize_cuda_engine``, the name-based tensor
API with ``execute_async_v3``) and type-checked against ``tensorrt-stubs``. TensorRT is imported lazily.

Precision
    TensorRT 10 (``BuilderFlag.FP16`` exists): a weakly typed network from the fp32 ONNX with the FP16 /
    BF16 / INT8 builder flag; INT8 takes the QDQ ONNX (explicit quantisation). TensorRT 11 (strongly typed, the
    flags are gone): the ONNX is converted first (:func:`ptyfast.export.quantize.convert_float` for fp16/bf16,
    the QDQ model for int8) and built as a strongly typed network. The choice is made by feature detection.

Engine cache
    An engine is valid only for the TensorRT version, GPU and build settings it was built with. Each engine has
    a JSON sidecar holding the model manifest and the key (TensorRT version, GPU name, compute capability,
    precision, batch profile and input shape, sha256 of the ONNX it was built from). :func:`ensure_engine`
    rebuilds an engine whose key does not match this machine and the given ONNX, or refuses with a clear
    message when it cannot rebuild (no ONNX at hand); it never runs a stale or foreign engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptyfast.choices import Precision
from ptyfast.errors import InputError
from ptyfast.models.manifest import Manifest, file_hash

INPUT_NAME = "diffraction"
OUTPUT_NAMES = ("amplitude", "phase")
PRECISIONS = Precision.values()
DEFAULT_BATCH = (1, 64, 256)
SIDECAR_FORMAT = "ptyfast-tensorrt-engine"
_FLAG = {"fp16": "FP16", "bf16": "BF16", "int8": "INT8"}


def require_tensorrt() -> str:
    """The TensorRT version, or an InputError that says what to do instead (imports TensorRT once)."""
    version = tensorrt_version()
    if version is None:
        raise InputError(
            "TensorRT is not installed (pip install 'ptyfast[tensorrt]' --extra-index-url https://pypi.nvidia.com, "
            "on a machine with an NVIDIA GPU and CUDA 12); use --format onnx or --backend onnxruntime instead."
        )
    return version


def tensorrt_version() -> str | None:
    """The installed TensorRT version, or None (imports TensorRT if present)."""
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return str(trt.__version__)


def gpu_info() -> tuple[str, str] | None:
    """(name, compute capability "9.0") of GPU 0, or None without a usable NVIDIA GPU. Torch-free."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return None
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20, check=True).stdout
            first = out.strip().splitlines()[0]
            name, cc = (s.strip() for s in first.rsplit(",", 1))
            return name, cc
        except (subprocess.SubprocessError, OSError, IndexError, ValueError):
            pass
    try:  # nvidia-smi missing or too old for compute_cap: ask CuPy (the gpu extra's array library)
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return name, f"{props['major']}.{props['minor']}"
    except Exception:
        return None


def require_gpu() -> tuple[str, str]:
    """GPU 0's (name, compute capability) or an InputError (TensorRT engines are built on the GPU they run on)."""
    info = gpu_info()
    if info is None:
        raise InputError(
            "no NVIDIA GPU is visible (nvidia-smi found none); TensorRT engines must be built and run on the GPU "
            "that uses them: use --format onnx / --backend onnxruntime on this machine."
        )
    return info


def parse_batch(text: str | tuple[int, int, int] | None) -> tuple[int, int, int]:
    """``"MIN:OPT:MAX"`` (or one number N = ``1:N:N``) → (min, opt, max) with 1 ≤ min ≤ opt ≤ max."""
    if text is None:
        return DEFAULT_BATCH
    if isinstance(text, tuple):
        parts = list(text)
    else:
        try:
            parts = [int(p) for p in str(text).split(":")]
        except ValueError:
            raise InputError(f"--batch '{text}' is not MIN:OPT:MAX integers (e.g. 1:64:256).") from None
        if len(parts) == 1:
            parts = [1, parts[0], parts[0]]
    if len(parts) != 3 or not (1 <= parts[0] <= parts[1] <= parts[2]):
        raise InputError(f"--batch '{text}' must be MIN:OPT:MAX with 1 ≤ MIN ≤ OPT ≤ MAX (e.g. 1:64:256).")
    return parts[0], parts[1], parts[2]


def engine_key(onnx_path: str | Path, *, precision: str, batch: tuple[int, int, int],
               input_size: tuple[int, int], trt_version: str, gpu: tuple[str, str]) -> dict[str, Any]:
    """The cache key of an engine: everything that makes a serialised engine valid or invalid."""
    return {"tensorrt": trt_version, "gpu": gpu[0], "compute_capability": gpu[1], "precision": precision,
            "batch": list(batch), "input_shape": [1, int(input_size[0]), int(input_size[1])],
            "onnx_sha256": file_hash(onnx_path)}


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def key_mismatch(stored: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Human-readable differences ``field: stored → expected`` between two engine keys (empty = match)."""
    return [f"{k}: {stored.get(k)!r} → {expected.get(k)!r}"
            for k in sorted(set(stored) | set(expected)) if stored.get(k) != expected.get(k)]


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The JSON sidecar of an engine (``<engine>.json``), validated."""
    sidecar = Path(engine_path).with_suffix(".json")
    try:
        payload = json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise InputError(f"engine {engine_path} has no sidecar {sidecar.name}; rebuild it with "
                         "`ptyfast export --format tensorrt`.") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"engine sidecar {sidecar} is not valid JSON; rebuild the engine.") from None
    if not isinstance(payload, dict) or payload.get("format") != SIDECAR_FORMAT or "key" not in payload:
        raise InputError(f"{sidecar} is not a ptyfast engine sidecar; rebuild the engine.")
    return payload


def _atomic_write(path: Path, data: bytes) -> None:
    from ptyfast.io.atomic import ensure_dir, write_bytes

    ensure_dir(path.parent)
    write_bytes(path, data)


def _precision_onnx(onnx_path: Path, precision: str, work_dir: Path, strongly_typed: bool) -> Path:
    """The ONNX to parse for ``precision``: fp32 as is; int8 the QDQ model; fp16/bf16 converted (TRT 11)."""
    from ptyfast.export.quantize import convert_float, quantize_int8

    if precision == "fp32":
        return onnx_path
    digest = file_hash(onnx_path)[:16]
    if precision == "int8":
        out = work_dir / f"{onnx_path.stem}.{digest}.int8.onnx"
        if not out.is_file():  # TensorRT wants QDQ on every quantised layer it should run in int8
            quantize_int8(onnx_path, out, op_types=None, per_channel=False)
        return out
    if not strongly_typed:
        return onnx_path  # TensorRT 10: the builder flag does it
    out = work_dir / f"{onnx_path.stem}.{digest}.{precision}.onnx"
    if not out.is_file():
        convert_float(onnx_path, out, precision)
    return out


@dataclass
class EngineBuild:
    """What :func:`build_engine` made."""

    path: Path
    sidecar: Path
    key: dict[str, Any]
    seconds: float
    size: int


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    manifest: Manifest,
    precision: str = "fp16",
    batch: tuple[int, int, int] = DEFAULT_BATCH,
    workspace_gib: float = 4.0,
    timing_cache: str | Path | None = None,
) -> EngineBuild:
    """Build a TensorRT engine from a ptyfast ONNX file, with its JSON sidecar.

    Parameters
    ----------
    onnx_path : str or Path
        fp32 ONNX export (input ``diffraction`` with a dynamic batch axis).
    engine_path : str or Path
        Output ``.engine`` (atomic); the sidecar is ``engine_path.with_suffix(".json")``.
    manifest : Manifest
        Copied into the sidecar.
    precision : {"fp32", "fp16", "bf16", "int8"}
    batch : (min, opt, max)
        Batch range of the optimisation profile.
    workspace_gib : float
        Workspace memory pool limit.
    timing_cache : str or Path, optional
        Timing cache file, read if present and updated after the build (default: beside the engine,
        ``timing-<TensorRT version>-sm<cc>.cache``).

    Returns
    -------
    EngineBuild
    """
    require_tensorrt()
    import tensorrt as trt

    gpu = require_gpu()
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'; TensorRT engines take {', '.join(PRECISIONS)}.")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    t0 = time.perf_counter()
    h, w = manifest.input_size
    key = engine_key(onnx_path, precision=precision, batch=batch, input_size=(h, w),
                     trt_version=str(trt.__version__), gpu=gpu)

    flag_name = _FLAG.get(precision)
    weak_flag = getattr(trt.BuilderFlag, flag_name, None) if flag_name else None
    strongly_typed = flag_name is not None and weak_flag is None  # TensorRT 11: no precision flags
    source = _precision_onnx(onnx_path, precision, engine_path.parent, strongly_typed)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    st_flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = (1 << int(st_flag)) if (strongly_typed and st_flag is not None) else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"TensorRT could not parse {source.name} ({errors}); re-export it with `ptyfast export`.")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if weak_flag is not None:
        config.set_flag(weak_flag)
        if precision == "int8" and hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)  # non-quantised layers (ConvTranspose, heads) in fp16
    profile = builder.create_optimization_profile()
    from ptyfast.models.preprocess import input_channels

    c = input_channels(manifest)
    profile.set_shape(INPUT_NAME, *(trt.Dims([b, c, h, w]) for b in batch))
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else engine_path.parent / (
        f"timing-{trt.__version__}-sm{gpu[1].replace('.', '')}.cache")
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InputError(f"TensorRT failed to build an engine from {source.name} at {precision}; "
                         "see the TensorRT log above, or try --precision fp32.")
    _atomic_write(engine_path, bytes(serialized))
    _atomic_write(cache_path, bytes(config.get_timing_cache().serialize()))
    sidecar = engine_path.with_suffix(".json")
    payload = {"format": SIDECAR_FORMAT, "manifest": json.loads(manifest.to_json()), "key": key,
               "key_sha256": key_digest(key), "onnx": onnx_path.name, "built_from": source.name,
               "build_seconds": round(time.perf_counter() - t0, 2)}
    _atomic_write(sidecar, json.dumps(payload, indent=2, sort_keys=True).encode())
    return EngineBuild(engine_path, sidecar, key, time.perf_counter() - t0, engine_path.stat().st_size)


def ensure_engine(
    engine_path: str | Path,
    *,
    onnx_path: str | Path | None,
    manifest: Manifest,
    precision: str,
    batch: tuple[int, int, int] | None = None,
    rebuild: bool = True,
) -> tuple[Path, str]:
    """An engine valid on this machine for this ONNX and settings: reuse, rebuild, or refuse.

    Parameters
    ----------
    engine_path : str or Path
        Where the engine lives (or is to be built).
    onnx_path : str or Path or None
        The ONNX the engine must come from; without it a mismatching engine cannot be rebuilt.
    manifest : Manifest
    precision : str
    batch : (min, opt, max), optional
        Profile; default: the stored one when reusing, :data:`DEFAULT_BATCH` when building.
    rebuild : bool
        Rebuild on mismatch (else refuse).

    Returns
    -------
    (Path, str)
        The engine path and what happened (``"cached"``, ``"built"``, ``"rebuilt: <why>"``).
    """
    require_tensorrt()
    import tensorrt as trt

    gpu = require_gpu()
    engine_path = Path(engine_path)
    stored = read_sidecar(engine_path)["key"] if engine_path.with_suffix(".json").is_file() else None
    if batch is None:
        batch = parse_batch(tuple(stored["batch"])) if stored else DEFAULT_BATCH
    if onnx_path is None:
        if stored is None or not engine_path.is_file():
            raise InputError(f"engine {engine_path} is missing and no ONNX model is at hand to build it; "
                             "pass the .onnx (or export one with `ptyfast export`).")
        # no ONNX to compare the hash with: check everything else, refuse on any difference
        expected = dict(stored, tensorrt=str(trt.__version__), gpu=gpu[0], compute_capability=gpu[1],
                        precision=precision)
        diff = key_mismatch(stored, expected)
        if diff:
            raise InputError(f"engine {engine_path} was built for another setup ({'; '.join(diff)}) and its ONNX "
                             "source is not at hand; rebuild it here with `ptyfast export --format tensorrt`.")
        return engine_path, "cached"
    h, w = manifest.input_size
    expected = engine_key(onnx_path, precision=precision, batch=batch, input_size=(h, w),
                          trt_version=str(trt.__version__), gpu=gpu)
    if stored is not None and engine_path.is_file():
        diff = key_mismatch(stored, expected)
        if not diff:
            return engine_path, "cached"
        if not rebuild:
            raise InputError(f"engine {engine_path} is stale or foreign ({'; '.join(diff)}); rebuild it with "
                             "`ptyfast export --format tensorrt`.")
        build_engine(onnx_path, engine_path, manifest=manifest, precision=precision, batch=batch)
        return engine_path, "rebuilt: " + "; ".join(diff)
    build_engine(onnx_path, engine_path, manifest=manifest, precision=precision, batch=batch)
    return engine_path, "built"


class TensorRTRunner:
    """Runs a checked engine on GPU 0: numpy (B, 1, H, W) float32 in, (amplitude, phase) numpy out.

    Device buffers come from CuPy (the ``gpu`` extra). Batches larger than the profile's maximum are split.
    """

    def __init__(self, engine_path: str | Path) -> None:
        require_tensorrt()
        import tensorrt as trt

        try:
            import cupy as cp
        except ImportError:
            raise InputError("the TensorRT backend needs CuPy for device buffers; install: pip install 'ptyfast[gpu]'.") from None
        self._trt, self._cp = trt, cp
        payload = read_sidecar(engine_path)
        self.max_batch = int(payload["key"]["batch"][2])
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if engine is None:
            raise InputError(f"TensorRT could not load engine {engine_path} (built by another TensorRT or GPU?); "
                             "rebuild it with `ptyfast export --format tensorrt`.")
        self._engine: trt.ICudaEngine | None = engine
        self._context: trt.IExecutionContext | None = engine.create_execution_context()
        self._stream = cp.cuda.Stream(non_blocking=True)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        missing = {INPUT_NAME, *OUTPUT_NAMES} - set(names)
        if missing:
            raise InputError(f"engine {engine_path} lacks tensors {sorted(missing)}; rebuild it from a ptyfast ONNX.")
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(x) > self.max_batch:
            parts = [self(x[i : i + self.max_batch]) for i in range(0, len(x), self.max_batch)]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        cp, ctx = self._cp, self._context
        if ctx is None:
            raise InputError("this TensorRT backend was closed; open a new one.")
        with self._stream:
            d_in = cp.asarray(x, dtype=self._dtypes[INPUT_NAME])
            ctx.set_input_shape(INPUT_NAME, tuple(d_in.shape))
            ctx.set_tensor_address(INPUT_NAME, int(d_in.data.ptr))
            outs = {}
            for name in OUTPUT_NAMES:
                dims = ctx.get_tensor_shape(name)
                shape = tuple(dims[i] for i in range(len(dims)))
                outs[name] = cp.empty(shape, dtype=self._dtypes[name])
                ctx.set_tensor_address(name, int(outs[name].data.ptr))
            if not ctx.execute_async_v3(self._stream.ptr):
                raise RuntimeError("TensorRT execution failed (see the TensorRT log)")
            self._stream.synchronize()
        amp, phase = (cp.asnumpy(outs[n]).astype(np.float32, copy=False) for n in OUTPUT_NAMES)
        return amp, phase

    def close(self) -> None:
        self._context = None
        self._engine = None


__all__ = ["PRECISIONS", "DEFAULT_BATCH", "require_tensorrt", "tensorrt_version", "gpu_info", "require_gpu",
           "parse_batch", "engine_key", "key_mismatch", "read_sidecar", "build_engine", "ensure_engine",
           "EngineBuild", "TensorRTRunner"]
