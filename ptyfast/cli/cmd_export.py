"""``ptyfast export``: ONNX (fp32 / int8 / fp16 / bf16) and TensorRT engines, each validated, with a status table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ptyfast.cli.app import OUTPUT, PERFORMANCE, choices, command, console, console_err
from ptyfast.choices import ExportFormat, Precision


@command("export")
def export(
    model: Annotated[Optional[str], typer.Argument(
        metavar="MODEL",
        help="Shipped model name (default ptynet-s), a .pt checkpoint, an .onnx file or a folder.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", metavar=choices(ExportFormat), rich_help_panel=OUTPUT,
                                     help="Artefact to make.")] = "onnx",
    precision: Annotated[str, typer.Option("--precision", "-p", metavar=choices(Precision), rich_help_panel=PERFORMANCE,
                                           help="Inference precision of the artefact.")] = "fp32",
    batch: Annotated[Optional[str], typer.Option(
        "--batch", metavar="MIN:OPT:MAX", rich_help_panel=PERFORMANCE,
        help="Inference batch sizes a TensorRT engine accepts, and the one it is tuned for (default "
             "1:64:256).")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", rich_help_panel=OUTPUT, help="Output folder.")] = Path("."),
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
