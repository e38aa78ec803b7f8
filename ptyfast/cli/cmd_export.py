"""``ptyfast export``: ONNX (fp32 / int8 / fp16 / bf16) and TensorRT engines, each validated, with a status table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ptyfast.cli.app import command, console, console_err
from ptyfast.choices import Precision


@command("export")
def export(
    model: Annotated[Optional[str], typer.Argument(
        help="Shipped model name (default ptynet-s), a .pt checkpoint, an .onnx file or a folder.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx or tensorrt.")] = "onnx",
    precision: Annotated[str, typer.Option("--precision", "-p", help=f"{Precision.listing()}.")] = "fp32",
    batch: Annotated[Optional[str], typer.Option(
        "--batch", help="TensorRT batch profile MIN:OPT:MAX (default 1:64:256).")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")] = Path("."),
) -> None:
    """Export a model to ONNX or a TensorRT engine and validate it against PyTorch."""
    from ptyfast.export.report import run_export, status_notes, status_table
    from ptyfast.io.atomic import output_folder

    with output_folder(output):  # a folder created here is removed again if the export fails
        rows = run_export(model, fmt=fmt, precision=precision.lower(), batch=batch, out_dir=output,
                          log=lambda msg: console.print(f"[dim]{msg}[/]", highlight=False))
    console.print(status_table(rows))
    for line in status_notes(rows):
        console.print(f"  {line}", highlight=False)
    failed = [r for r in rows if r.status == "failed"]
    if failed:
        console_err.print(f"[bold red]error:[/] {len(failed)} artefact(s) failed validation; "
                          "see the table and the .export.json report.", highlight=False)
        raise typer.Exit(1)
