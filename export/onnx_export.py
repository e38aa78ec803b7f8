"""torch → ONNX export and the parity check against PyTorch.

The exported graph has one input ``diffraction`` (B, 1, H, W) float32 and two outputs ``amplitude`` and
``phase`` (B, H, W) float32, a dynamic batch axis, opset :data:`OPSET` and the model manifest in
``metadata_props`` (see :meth:`ptyfast.models.manifest.Manifest.metadata_props`). It is written as one file
(weights inline; ONNX's protobuf limit of 2 GiB is far above ptyfast's models) and atomically.

The dynamo exporter (``torch.onnx.export(..., dynamo=True)``, which also runs onnxscript's optimiser) is
tried first; the TorchScript exporter is the fallback. Both give clean graphs for the three architectures;
the dynamo graph has no ``Constant`` nodes (initialisers instead).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ptyfast import __version__
from ptyfast.errors import InputError
from ptyfast.models.manifest import Manifest

#: ONNX opset written by the exporter (well supported by ONNX Runtime ≥ 1.14 and TensorRT 10/11).
OPSET = 18
INPUT_NAME = "diffraction"
OUTPUT_NAMES = ("amplitude", "phase")
#: fp32 parity tolerances (``numpy.allclose`` semantics).
RTOL = 1e-4
ATOL = 1e-5


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes
    ----------
    path : Path
        The ONNX file.
    exporter : str
        ``"dynamo"`` or ``"torchscript"``.
    opset : int
    seconds : float
        Wall time of export + check + write.
    size : int
        File size in bytes.
    """

    path: Path
    exporter: str
    opset: int
    seconds: float
    size: int


@dataclass
class ParityCase:
    """Parity of one input set: errors per output (ONNX Runtime vs PyTorch)."""

    inputs: str  # "random" or "simulated"
    batch: int
    max_abs: dict[str, float]
    mean_abs: dict[str, float]
    passed: bool


@dataclass
class ParityReport:
    """All parity cases of one exported model and whether they are within tolerance."""

    architecture: str
    rtol: float
    atol: float
    cases: list[ParityCase] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def max_abs(self) -> float:
        return max((v for c in self.cases for v in c.max_abs.values()), default=float("nan"))

    @property
    def mean_abs(self) -> float:
        vals = [v for c in self.cases for v in c.mean_abs.values()]
        return float(np.mean(vals)) if vals else float("nan")

    def to_dict(self) -> dict:
        return {"architecture": self.architecture, "rtol": self.rtol, "atol": self.atol, "passed": self.passed,
                "max_abs": self.max_abs, "mean_abs": self.mean_abs, "cases": [asdict(c) for c in self.cases]}


def _atomic_save(proto, path: Path) -> None:
    import onnx

    from ptyfast.io.atomic import atomic_path, ensure_dir

    ensure_dir(path.parent)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)


def set_metadata(proto, props: dict[str, str]) -> None:
    """Replace/insert ``metadata_props`` entries of an ONNX ModelProto in place."""
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    for key, value in keep + list(props.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)


def _dynamo_export(model, example, opset: int):
    import torch

    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    program = torch.onnx.export(
        model, (example,), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), opset_version=opset,
        dynamo=True, dynamic_shapes=({0: batch},), external_data=False, optimize=True, verbose=False,
    )
    if program is None:
        raise RuntimeError("the dynamo exporter returned no program")
    return program.model_proto


def _torchscript_export(model, example, opset: int, tmp: Path):
    import onnx
    import torch

    axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    torch.onnx.export(model, (example,), str(tmp), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                      opset_version=opset, dynamic_axes=axes, dynamo=False)
    return onnx.load(str(tmp))


def export_onnx(
    model,
    manifest: Manifest,
    path: str | Path,
    *,
    opset: int = OPSET,
    exporter: str = "auto",
    extra_metadata: dict[str, str] | None = None,
) -> OnnxExport:
    """Export a torch model to one ONNX file with the manifest in its metadata.

    Parameters
    ----------
    model : torch.nn.Module
        A ptyfast network: (B, 1, H, W) → (amplitude, phase), each (B, H, W). Exported in eval mode, fp32, CPU.
    manifest : Manifest
        Written to ``metadata_props`` (``ptyfast.manifest`` etc.).
    path : str or Path
        Destination ``.onnx`` (written atomically; parent folders are created).
    opset : int
        ONNX opset (default :data:`OPSET`).
    exporter : {"auto", "dynamo", "torchscript"}
        ``auto`` tries dynamo and falls back to TorchScript.
    extra_metadata : dict, optional
        More ``metadata_props`` (e.g. the source checkpoint's sha256).

    Returns
    -------
    OnnxExport
    """
    import onnx
    import torch

    if exporter not in ("auto", "dynamo", "torchscript"):
        raise InputError(f"unknown ONNX exporter '{exporter}'; use auto, dynamo or torchscript.")
    path = Path(path)
    t0 = time.perf_counter()
    model = getattr(model, "module", model).float().cpu().eval()
    h, w = manifest.input_size
    from ptyfast.models.preprocess import input_channels

    example = torch.rand(2, input_channels(manifest), h, w)
    proto = None
    used = exporter
    errors: list[str] = []
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ..." is noise here
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter in ("auto", "dynamo"):
            try:
                proto = _dynamo_export(model, example, opset)
                used = "dynamo"
            except Exception as exc:  # exporter internals: fall back, report if both fail
                errors.append(f"dynamo: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        if proto is None and exporter in ("auto", "torchscript"):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.ts.tmp")
            try:
                proto = _torchscript_export(model, example, opset, tmp)
                used = "torchscript"
            except Exception as exc:
                errors.append(f"torchscript: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            finally:
                tmp.unlink(missing_ok=True)
    onnx_log.setLevel(level)
    if proto is None:
        raise InputError(f"ONNX export of '{manifest.architecture}' failed ({'; '.join(errors)}); "
                         "report this with PTYFAST_DEBUG=1 output.")
    if not manifest.ptyfast_version:
        manifest = Manifest(**{**asdict(manifest), "ptyfast_version": __version__})
    props = manifest.metadata_props()
    props.update({"ptyfast.precision": "fp32", "ptyfast.exporter": used, "ptyfast.opset": str(opset),
                  "ptyfast.input": INPUT_NAME, "ptyfast.outputs": ",".join(OUTPUT_NAMES)})
    props.update(extra_metadata or {})
    set_metadata(proto, props)
    proto.producer_name, proto.producer_version = "ptyfast", __version__
    proto.doc_string = f"ptyfast {manifest.architecture}: diffraction (B,1,{h},{w}) -> amplitude, phase (B,{h},{w})"
    onnx.checker.check_model(proto, full_check=True)
    _atomic_save(proto, path)
    return OnnxExport(path, used, opset, time.perf_counter() - t0, path.stat().st_size)


def ort_session(path: str | Path, *, threads: int | None = None):
    """A CPU ONNX Runtime session for checks (``threads`` intra-op threads, default all cores)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def parity_check(
    model,
    onnx_path: str | Path,
    manifest: Manifest,
    *,
    batches: tuple[int, ...] = (1, 8),
    seed: int = 0,
    rtol: float = RTOL,
    atol: float = ATOL,
    inputs: tuple[str, ...] = ("random", "simulated"),
) -> ParityReport:
    """Compare ONNX Runtime (CPU) with PyTorch on fresh random and simulated, preprocessed patterns.

    Parameters
    ----------
    model : torch.nn.Module
        The source network (fp32, eval).
    onnx_path : str or Path
        Its ONNX export.
    manifest : Manifest
        Gives the input size and preprocessing of the simulated patterns.
    batches : tuple of int
        Batch sizes to check (each input set at each size).
    seed : int
        Seed of the inputs.
    rtol, atol : float
        Tolerances of ``numpy.allclose(onnx, torch)`` per output.
    inputs : tuple of str
        ``"random"`` (uniform [0, 1)) and/or ``"simulated"`` (see :mod:`ptyfast.export.samples`).

    Returns
    -------
    ParityReport
    """
    import torch

    from ptyfast.export.samples import random_inputs, simulated_patterns

    model = getattr(model, "module", model).float().cpu().eval()
    sess = ort_session(onnx_path)
    report = ParityReport(manifest.architecture, rtol, atol)
    need = max(batches)
    pools = {}
    if "random" in inputs:
        pools["random"] = random_inputs(need, manifest, seed=seed + 1)
    if "simulated" in inputs:
        pools["simulated"] = simulated_patterns(need, manifest, seed=seed + 2)
    for kind, pool in pools.items():
        for b in batches:
            x = np.ascontiguousarray(pool[:b])
            got = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
            with torch.no_grad():
                ref = [t.numpy() for t in model(torch.from_numpy(x))]
            max_abs, mean_abs, ok = {}, {}, True
            for name, g, r in zip(OUTPUT_NAMES, got, ref):
                if g.shape != r.shape:
                    raise InputError(f"ONNX output '{name}' has shape {g.shape}, PyTorch {r.shape}; re-export.")
                d = np.abs(g.astype(np.float64) - r.astype(np.float64))
                max_abs[name], mean_abs[name] = float(d.max()), float(d.mean())
                ok &= bool(np.allclose(g, r, rtol=rtol, atol=atol))
            report.cases.append(ParityCase(kind, b, max_abs, mean_abs, ok))
    return report


__all__ = ["OPSET", "INPUT_NAME", "OUTPUT_NAMES", "RTOL", "ATOL", "OnnxExport", "ParityCase", "ParityReport",
           "export_onnx", "parity_check", "set_metadata", "ort_session"]
