"""``ptyfast export`` as a library function, and its status table.

:func:`run_export` resolves the model, exports/validates the fp32 ONNX, converts it to the requested precision
(INT8 QDQ, fp16, bf16), builds a TensorRT engine when asked, and returns one :class:`ExportRow` per artefact;
:func:`status_table` renders them like established toolkits do (format, status, size, max error, time).
A JSON report with the parity cases is written beside the files.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ptyfast.choices import ExportFormat, Precision
from ptyfast.errors import InputError
from ptyfast.metrics import psnr
from ptyfast.io.atomic import ensure_dir, write_text

FORMATS = ExportFormat.values()
PRECISIONS = Precision.values()
#: Patch-level PSNR (dB, vs fp32) above which a reduced-precision model counts as validated.
MIN_PSNR = {"int8": 30.0, "fp16": 40.0, "bf16": 30.0, "fp32": 60.0}


@dataclass
class ExportRow:
    """One artefact of an export run."""

    format: str  # "PyTorch", "ONNX", "TensorRT"
    precision: str
    status: str  # "source", "exported", "validated", "failed"
    path: Path | None = None
    size: int = 0
    max_error: float | None = None
    seconds: float | None = None
    note: str = ""
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path) if self.path else None
        return d


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def status_table(rows: list[ExportRow], title: str = "ptyfast export"):
    """A rich Table: Format, Precision, Status, Size, Max error, Time, File (notes: :func:`status_notes`)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("Format", "Precision", "Status", "Size", "Max error", "Time", "File"):
        table.add_column(col, justify="right" if col in ("Size", "Max error", "Time") else "left")
    colour = {"validated": "green", "exported": "yellow", "failed": "bold red", "source": "dim"}
    for r in rows:
        status = f"[{colour.get(r.status, '')}]{r.status}[/]" if r.status in colour else r.status
        err = "—" if r.max_error is None else f"{r.max_error:.2e}"
        secs = "—" if r.seconds is None else f"{r.seconds:.1f} s"
        where = r.path.name if r.path else ""
        table.add_row(r.format, r.precision, status, _size(r.size) if r.size else "—", err, secs, where)
    return table


def status_notes(rows: list[ExportRow]) -> list[str]:
    """One line per row that has a note (exporter, parity, PSNR, speed, TensorRT build)."""
    return [f"{r.format} {r.precision}: {r.note}" for r in rows if r.note]


def _validation_inputs(manifest, n: int = 32) -> np.ndarray:
    from ptyfast.export.samples import simulated_patterns

    return simulated_patterns(n, manifest, seed=1234)


def _fp32_onnx(source, out_dir: Path, rows: list[ExportRow], report: dict, say):
    """Step 1: the fp32 ONNX, exported from the checkpoint and checked for parity with PyTorch (or the given
    ONNX file). Returns its path and the model's manifest."""
    manifest = source.manifest
    onnx_path = out_dir / f"{source.name}.onnx"
    if source.checkpoint is not None:
        rows.append(ExportRow("PyTorch", "fp32", "source", source.checkpoint, source.checkpoint.stat().st_size))
        try:
            import torch  # noqa: F401
        except ModuleNotFoundError:
            raise InputError("exporting a checkpoint needs PyTorch; install it: pip install 'ptyfast[train]'.") from None
        from ptyfast.export.onnx_export import export_onnx, parity_check
        from ptyfast.models.checkpoint import load_checkpoint
        from ptyfast.models.manifest import file_hash

        say(f"exporting {source.checkpoint.name} → {onnx_path.name}")
        model, manifest = load_checkpoint(source.checkpoint)
        info = export_onnx(model, manifest, onnx_path,
                           extra_metadata={"ptyfast.checkpoint_sha256": file_hash(source.checkpoint)})
        say("checking parity with PyTorch (random and simulated patterns, batch 1 and 8)")
        t0 = time.perf_counter()
        parity = parity_check(model, onnx_path, manifest)
        rows.append(ExportRow("ONNX", "fp32", "validated" if parity.passed else "failed", onnx_path, info.size,
                              parity.max_abs, info.seconds + time.perf_counter() - t0,
                              f"opset {info.opset}, {info.exporter}, mean err {parity.mean_abs:.1e}",
                              parity.to_dict()))
        report["parity"] = parity.to_dict()
    elif source.onnx is not None:
        onnx_path = source.onnx
        rows.append(ExportRow("ONNX", "fp32", "source", onnx_path, onnx_path.stat().st_size,
                              note="given; no checkpoint to compare with"))
    else:
        raise InputError(f"model '{source.name}' is a TensorRT engine only; export from its .pt or .onnx instead.")
    return onnx_path, manifest


def _reduced_onnx(source, onnx_path: Path, manifest, precision: str, out_dir: Path, rows: list[ExportRow],
                  report: dict, say) -> None:
    """Step 2: the ONNX converted to ``precision`` (int8, fp16, bf16), compared with the fp32 file."""
    from ptyfast.export import quantize

    dst = out_dir / f"{source.name}.{precision}.onnx"
    say(f"converting to {precision} → {dst.name}")
    conv = (quantize.quantize_int8(onnx_path, dst) if precision == "int8"
            else quantize.convert_float(onnx_path, dst, precision))
    row = ExportRow("ONNX", precision, "exported", dst, conv.size, None, conv.seconds,
                    details={"settings": conv.settings})
    if precision != "bf16":  # ONNX Runtime has no bf16 kernels on CPU: exported, validated on TensorRT
        x = _validation_inputs(manifest)
        acc = quantize.compare_models(onnx_path, dst, x, manifest)
        fp32_rate = quantize.throughput(onnx_path, x[:16], repeats=3)
        rate = quantize.throughput(dst, x[:16], repeats=3)
        worst_psnr = min(acc["psnr_amplitude"], acc["psnr_phase"])
        row.max_error = max(acc["max_abs_amplitude"], acc["max_abs_phase"])
        row.status = "validated" if worst_psnr >= MIN_PSNR[precision] else "failed"
        row.note = (f"PSNR vs fp32 {acc['psnr_amplitude']:.1f}/{acc['psnr_phase']:.1f} dB (amp/phase), "
                    f"{rate / fp32_rate:.2f}× fp32 speed")
        row.details.update(accuracy=acc, patterns_per_s=rate, fp32_patterns_per_s=fp32_rate)
    else:
        row.note = "bf16 runs on TensorRT only"
    rows.append(row)
    report["converted"] = row.to_dict()


def _tensorrt_engine(source, onnx_path: Path, manifest, precision: str, profile, out_dir: Path,
                     rows: list[ExportRow], report: dict, say) -> None:
    """Step 3: a TensorRT engine built from the fp32 ONNX, compared with it on simulated patterns."""
    from ptyfast.export import tensorrt_engine as te

    engine = out_dir / f"{source.name}.{precision}.engine"
    say(f"building TensorRT engine ({precision}, batch {profile[0]}:{profile[1]}:{profile[2]}) → {engine.name}")
    built = te.build_engine(onnx_path, engine, manifest=manifest, precision=precision, batch=profile)
    runner = te.TensorRTRunner(engine)
    x = _validation_inputs(manifest, n=min(32, profile[2]))
    from ptyfast.export.onnx_export import ort_session

    want = ort_session(onnx_path).run(["amplitude", "phase"], {"diffraction": x})
    got = runner(x)
    runner.close()
    err = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    lo, hi = manifest.amplitude_range
    amp_psnr = psnr(want[0], got[0], hi - lo)
    ok = amp_psnr >= MIN_PSNR[precision] or err <= 1e-3
    rows.append(ExportRow("TensorRT", precision, "validated" if ok else "failed", engine, built.size, err,
                          built.seconds, f"TensorRT {built.key['tensorrt']} on {built.key['gpu']}, "
                          f"PSNR vs ONNX fp32 {amp_psnr:.1f} dB", {"key": built.key}))
    report["engine"] = rows[-1].to_dict()


def run_export(
    spec=None,
    *,
    fmt: str = "onnx",
    precision: str = "fp32",
    batch: str | None = None,
    out_dir: str | Path = ".",
    log=None,
) -> list[ExportRow]:
    """Export a model and validate every artefact.

    Parameters
    ----------
    spec : str, path or None
        Model name or path (see :func:`ptyfast.models.pretrained.resolve_model`); default the shipped PtyNet-S.
    fmt : {"onnx", "tensorrt"}
    precision : {"fp32", "fp16", "bf16", "int8"}
        ONNX: the fp32 file is always written; a reduced one is added. TensorRT: the engine's precision.
    batch : "MIN:OPT:MAX", optional
        TensorRT optimisation profile (default 1:64:256).
    out_dir : str or Path
        Output folder (created).
    log : callable, optional
        Progress messages (``log(str)``).

    Returns
    -------
    list of ExportRow
    """
    from ptyfast.export import tensorrt_engine as te
    from ptyfast.models.pretrained import resolve_model

    say = log or (lambda msg: None)
    fmt = str(fmt).lower()
    if fmt not in FORMATS:
        raise InputError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}.")
    precision = Precision.check(precision, "precision")
    profile = te.parse_batch(batch)
    if fmt == "tensorrt":  # fail before any work
        te.require_tensorrt()
        te.require_gpu()
    source = resolve_model(spec)
    out_dir = Path(out_dir)
    ensure_dir(out_dir)
    manifest = source.manifest
    rows: list[ExportRow] = []
    report: dict = {"model": source.name, "architecture": manifest.architecture, "format": fmt,
                    "precision": precision}

    onnx_path, manifest = _fp32_onnx(source, out_dir, rows, report, say)
    if fmt == "onnx" and precision != "fp32":
        _reduced_onnx(source, onnx_path, manifest, precision, out_dir, rows, report, say)
    if fmt == "tensorrt":
        _tensorrt_engine(source, onnx_path, manifest, precision, profile, out_dir, rows, report, say)
    report["rows"] = [r.to_dict() for r in rows]
    write_text(out_dir / f"{source.name}.export.json", json.dumps(report, indent=2, default=str))
    return rows


__all__ = ["ExportRow", "run_export", "status_table", "status_notes", "FORMATS", "PRECISIONS"]
