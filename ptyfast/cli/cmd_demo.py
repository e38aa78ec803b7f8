"""``ptyfast demo``: the embedded default — simulate a scan from a bundled image with the shipped model's probe,
reconstruct it with the shipped model, print throughput and quality, write pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ptyfast.cli.app import MODEL, OUTPUT, REFINEMENT, SIMULATION, STITCHING, command, console


@command("demo", renamed={"--refine": "--refine-iterations"})
def demo_cmd(
    output: Annotated[Path, typer.Option("-o", "--output", rich_help_panel=OUTPUT,
                                         help="Folder for the scan, result and pictures.")] = Path("ptyfast-demo"),
    overlap: Annotated[float, typer.Option(min=0, max=0.95, metavar="FRACTION", rich_help_panel=SIMULATION,
                                           help="Linear scan overlap (0.75: every pixel lit by several "
                                                "windows).")] = 0.75,
    size: Annotated[int, typer.Option(min=200, max=4000, metavar="PX", rich_help_panel=SIMULATION,
                                      help="Object side in pixels.")] = 600,
    noise: Annotated[bool, typer.Option(rich_help_panel=SIMULATION, help="Poisson photon noise at --photons.")] = False,
    photons: Annotated[float, typer.Option(min=1, rich_help_panel=SIMULATION,
                                           help="Photons per frame, sum|P|² (probe power).")] = 1e6,
    model: Annotated[str, typer.Option(metavar="MODEL", rich_help_panel=MODEL,
                                       help="Shipped model name or .pt/.onnx file.")] = "ptynet-s",
    refine_iterations: Annotated[int, typer.Option(
        "--refine-iterations", "--refine", min=0, rich_help_panel=REFINEMENT,
        help="rPIE iterations started from the network's result (0 = network only).")] = 30,
    seed: Annotated[int, typer.Option(rich_help_panel=SIMULATION, help="Random seed.")] = 0,
    fit_offsets: Annotated[bool, typer.Option(
        "--fit-offsets/--no-fit-offsets", rich_help_panel=STITCHING,
        help="Fit the patches' phase offsets to the data after the overlap solve (reconstruct "
             "--fit-offsets).")] = True,
) -> None:
    """Simulate a held-out scan, reconstruct it with the shipped PtyNet-S (ONNX Runtime, no torch), show quality."""
    from ptyfast.cli.cmd_evaluate import quality_table
    from ptyfast.evaluation.demo import DemoOptions, run_demo

    res = run_demo(output, DemoOptions(overlap=overlap, size=size, noise=noise, photons=photons, model=model,
                                       refine=refine_iterations, seed=seed, fit_offsets=fit_offsets), log=console.print)
    console.print(quality_table({**res.rows, **res.baselines}, "quality against the truth (covered pixels only)"))
    q, flat = res.rows["PtyNet-S"], res.baselines["flat"]
    dp, da = res.gain_over_flat
    console.print(f"PtyNet-S vs a flat guess on the same pixels: phase {dp:+.1f} dB (SSIM {q.phase_ssim:.2f} vs "
                  f"{flat.phase_ssim:.2f}), amplitude {da:+.1f} dB (SSIM {q.amplitude_ssim:.2f} vs "
                  f"{flat.amplitude_ssim:.2f})")
    for pth in res.pictures:
        console.print(f"wrote {pth}")
