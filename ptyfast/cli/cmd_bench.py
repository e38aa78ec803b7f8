"""``ptyfast bench``: throughput, latency, memory and FLOPs per backend × precision × batch, end to end too,
beside the paper's and PtychoNN 2.0's published figures and this device's compute floor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ptyfast.cli.app import command, console
from ptyfast.choices import Device


@command("bench")
def bench_cmd(
    model: Annotated[Optional[str], typer.Option(help="Shipped model name or .pt/.onnx path (default: the shipped "
                                                      "PtyNet-S, else seeded random PtyNet-S weights).")] = None,
    backend: Annotated[str, typer.Option(help="Comma-separated: onnxruntime, torch, tensorrt, or 'all'.")]
    = "onnxruntime,torch",
    precision: Annotated[str, typer.Option(help="Comma-separated: fp32, int8, bf16, fp16.")] = "fp32,int8,bf16",
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,16,256",
    repeats: Annotated[int, typer.Option(help="Most timed calls per case (≥ 2 are made; a case stops after "
                                              "--max-seconds).")] = 10,
    max_seconds: Annotated[float, typer.Option(help="Time budget of one case's timed calls.")] = 2.0,
    end_to_end: Annotated[bool, typer.Option("--end-to-end/--no-end-to-end",
                                             help="Also time simulate → CXI → reconstruct, per stage.")] = True,
    frames: Annotated[int, typer.Option(help="Patterns of the end-to-end scan.")] = 256,
    e2e_batch: Annotated[Optional[int], typer.Option(help="Inference batch of the end-to-end cases (default: each "
                                                          "backend's, as reconstruct's).")] = None,
    finetune: Annotated[bool, typer.Option("--finetune/--no-finetune",
                                           help="Also time one fine-tuning epoch of 256 patterns (torch).")] = False,
    device: Annotated[str, typer.Option(help=f"{Device.listing()}.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: all usable cores).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write every figure as JSON (atomic).")] = None,
) -> None:
    """Benchmark inference (model only and end to end) with published reference figures beside the results."""
    from ptyfast.bench import BENCH_BACKENDS, BenchOptions, render, run_bench, write_json
    from ptyfast.cli.app import parse_list
    from ptyfast.errors import InputError
    from ptyfast.io.atomic import check_writable

    if json_out is not None:
        check_writable(json_out)
    backends = BENCH_BACKENDS if backend.strip().lower() == "all" else parse_list(backend, what="backend")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1; found {threads}.")
    options = BenchOptions(model=model, backends=backends, precisions=parse_list(precision, what="precision"),
                           batches=parse_list(batch, kind=int, what="batch"), repeats=repeats,
                           max_seconds=max_seconds, device=device, threads=threads, end_to_end=end_to_end,
                           frames=frames, e2e_batch=e2e_batch, finetune=finetune).validate()
    with console.status("benchmarking…") as status:
        result = run_bench(options, progress=lambda what: status.update(f"benchmarking: {what}"))
    render(result, console)
    if json_out is not None:
        console.print(f"wrote {write_json(result, json_out)}")
