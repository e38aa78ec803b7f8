"""``ptyfast bench``: throughput, latency, memory and FLOPs per backend × precision × batch, end to end too,
beside the paper's and PtychoNN 2.0's published figures and this device's compute floor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ptyfast.cli.app import BENCHMARK, MODEL, OUTPUT, PERFORMANCE, Threads, choices, command, console
from ptyfast.choices import Backend, Device, Precision


@command("bench", renamed={"--backend": "--backends", "--precision": "--precisions", "--batch": "--batches",
                           "--frames": "--e2e-frames"})
def bench_cmd(
    model: Annotated[Optional[str], typer.Option(metavar="MODEL", rich_help_panel=MODEL,
                                                 help="Shipped model name or .pt/.onnx file (default: the shipped "
                                                      "PtyNet-S, else seeded random PtyNet-S weights).")] = None,
    backends: Annotated[str, typer.Option("--backends", "--backend", rich_help_panel=PERFORMANCE,
                                          metavar=choices(Backend, drop=("auto",), many=True),
                                          help="Inference libraries to time, comma-separated, or all.")]
    = "onnxruntime,torch",
    precisions: Annotated[str, typer.Option("--precisions", "--precision", metavar=choices(Precision, many=True),
                                            rich_help_panel=PERFORMANCE,
                                            help="Inference precisions to time, comma-separated.")] = "fp32,int8,bf16",
    batches: Annotated[str, typer.Option("--batches", "--batch", metavar="N,...", rich_help_panel=PERFORMANCE,
                                         help="Inference batch sizes to time, comma-separated.")] = "1,16,256",
    repeats: Annotated[int, typer.Option(rich_help_panel=BENCHMARK,
                                         help="Most timed calls per case (≥ 2 are made; a case stops after "
                                              "--max-seconds).")] = 10,
    max_seconds: Annotated[float, typer.Option(metavar="SECONDS", rich_help_panel=BENCHMARK,
                                               help="Time budget of one case's timed calls.")] = 2.0,
    end_to_end: Annotated[bool, typer.Option("--end-to-end/--no-end-to-end", rich_help_panel=BENCHMARK,
                                             help="Also time simulate → CXI → reconstruct, per stage.")] = True,
    e2e_frames: Annotated[int, typer.Option("--e2e-frames", "--frames", rich_help_panel=BENCHMARK,
                                            help="Patterns of the end-to-end scan.")] = 256,
    e2e_batch: Annotated[Optional[int], typer.Option(rich_help_panel=BENCHMARK,
                                                     help="Inference batch of the end-to-end cases (default: each "
                                                          "backend's, as reconstruct's).")] = None,
    finetune: Annotated[bool, typer.Option("--finetune/--no-finetune", rich_help_panel=BENCHMARK,
                                           help="Also time one fine-tuning epoch of 256 patterns (torch).")] = False,
    device: Annotated[str, typer.Option(metavar=choices(Device), rich_help_panel=PERFORMANCE,
                                        help="Where inference runs (auto: a CUDA GPU when there is one).")] = "auto",
    threads: Threads = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", rich_help_panel=OUTPUT,
                                                     help="Write every figure as JSON (atomic).")] = None,
) -> None:
    """Benchmark inference (model only and end to end) with published reference figures beside the results."""
    from ptyfast.bench import BENCH_BACKENDS, BenchOptions, render, run_bench, write_json
    from ptyfast.cli.app import parse_list
    from ptyfast.io.atomic import check_writable

    if json_out is not None:
        check_writable(json_out)
    names = BENCH_BACKENDS if backends.strip().lower() == "all" else parse_list(backends, what="backend")
    options = BenchOptions(model=model, backends=names, precisions=parse_list(precisions, what="precision"),
                           batches=parse_list(batches, kind=int, what="batch"), repeats=repeats,
                           max_seconds=max_seconds, device=device, threads=threads or None, end_to_end=end_to_end,
                           frames=e2e_frames, e2e_batch=e2e_batch, finetune=finetune).validate()
    with console.status("benchmarking…") as status:
        result = run_bench(options, progress=lambda what: status.update(f"benchmarking: {what}"))
    render(result, console)
    if json_out is not None:
        console.print(f"wrote {write_json(result, json_out)}")
