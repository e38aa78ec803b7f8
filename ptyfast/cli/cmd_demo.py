"""``ptyfast demo``: the embedded default — simulate a scan from a bundled image with the shipped model's probe,
reconstruct it with the shipped model, print throughput and quality, write pictures."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ptyfast.cli.app import command, console


@command("demo")
def demo_cmd(
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the scan, result and pictures.")]
    = Path("ptyfast-demo"),
    overlap: Annotated[float, typer.Option(min=0, max=0.95, help="Linear scan overlap (0.75: every pixel "
                                                                   "lit by several windows).")] = 0.75,
    size: Annotated[int, typer.Option(min=200, max=4000, help="Object size in pixels.")] = 600,
    noise: Annotated[bool, typer.Option(help="Poisson noise at --photons.")] = False,
    photons: Annotated[float, typer.Option(min=1, help="Photons per frame (probe power).")] = 1e6,
    model: Annotated[str, typer.Option(help="Shipped model name or path.")] = "ptynet-s",
    refine: Annotated[int, typer.Option(min=0, help="rPIE iterations started from the network's result "
                                                    "(0 = network only).")] = 30,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Simulate a held-out scan, reconstruct it with the shipped PtyNet-S (ONNX Runtime, no torch), show quality."""
    from ptyfast.io.cxi import write_cxi
    from ptyfast.io.images import read_image
    from ptyfast.metrics import evaluate_against_truth, truth_on_grid
    from ptyfast.physics.objects import object_from_images
    from ptyfast.physics.probe import default_probe
    from ptyfast.physics.scanpath import raster_positions
    from ptyfast.physics.simulate import simulate_scan
    from ptyfast.runtime.output import save_previews, write_reconstruction
    from ptyfast.runtime.reconstruct import ReconstructJob, run_reconstruct
    from ptyfast.cli.cmd_evaluate import quality_table
    from ptyfast.evaluation.figures import comparison_figure

    from ptyfast.io.atomic import ensure_dir

    ensure_dir(output)
    data = resources.files("ptyfast.data")
    with resources.as_file(data / "demo_amplitude.png") as a, resources.as_file(data / "demo_phase.png") as p:
        obj = object_from_images(read_image(a), read_image(p), (size, size))
    rng = np.random.default_rng(seed)
    probe = default_probe()
    positions = raster_positions(obj.shape, probe.shape, overlap=overlap, jitter=2.0, rng=rng)
    t = time.perf_counter()
    scan = simulate_scan(obj, probe, positions, photons=photons, noise=noise, rng=rng,
                         meta={"source": "ptyfast demo (held-out cat faces angle95/angle97)"})
    t_sim = time.perf_counter() - t
    scan_path = write_cxi(output / "demo_scan.cxi", scan)
    console.print(f"simulated {scan.n_frames} patterns of 128² ({overlap:.0%} overlap, object {size}², "
                  f"{'Poisson noise' if noise else 'noise-free'}) in {t_sim:.2f} s → {scan_path}")
    from ptyfast.io.cxi import read_cxi

    lazy = read_cxi(scan_path, validate=False)  # just written (and validated) above
    rec, prov = run_reconstruct(lazy, ReconstructJob(model=model))
    console.print(f"backend: [bold]{prov['backend_reason']}[/]")
    out = write_reconstruction(output / "demo_recon.h5", rec, prov)
    t_ = rec.timings
    console.print(f"reconstructed {rec.n_frames} patterns: [bold]{prov['patterns_per_s']:.0f} patterns/s[/] end to end "
                  f"(infer {t_['infer']:.2f} s, stitch {t_['stitch']:.2f} s, consistency {t_.get('consistency', 0):.2f} s, "
                  f"model load {t_['load_model']:.2f} s) → {out}")
    if rec.consistency is not None:
        console.print(f"data consistency ε = {rec.consistency.error:.4f} (no ground truth needed)")
    q, base, region = evaluate_against_truth(rec.object, rec.weight, rec.origin, obj)
    rows = {"PtyNet-S": q}
    shown = {"PtyNet-S": rec.object}
    if refine:
        from ptyfast.refine import refine_reconstruction

        t = time.perf_counter()
        res = refine_reconstruction(lazy, rec.object, positions=rec.positions, probe=rec.probe, algorithm="rpie",
                                    iterations=refine)
        console.print(f"rPIE from the network's result: {refine} iterations in {time.perf_counter() - t:.1f} s, "
                      f"data error {res.errors[0]:.3g} → {res.errors[-1]:.3g}")
        rows[f"PtyNet-S + {refine} rPIE"] = evaluate_against_truth(np.asarray(res.object), rec.weight, rec.origin,
                                                                   obj)[0]
        shown[f"+ {refine} rPIE"] = np.asarray(res.object)
    console.print(quality_table({**rows, **base}, "quality against the truth (covered pixels only)"))
    flat = base["flat"]
    console.print(f"PtyNet-S vs a flat guess on the same pixels: phase {q.phase_psnr - flat.phase_psnr:+.1f} dB "
                  f"(SSIM {q.phase_ssim:.2f} vs {flat.phase_ssim:.2f}), amplitude "
                  f"{q.amplitude_psnr - flat.amplitude_psnr:+.1f} dB (SSIM {q.amplitude_ssim:.2f} vs "
                  f"{flat.amplitude_ssim:.2f})")
    pics = save_previews(rec, output / "demo_recon")
    pics.append(comparison_figure(output / "demo_truth_vs_recon.png", shown,
                                  truth_on_grid(obj, rec.origin, rec.object.shape), region,
                                  f"held-out scan, {overlap:.0%} overlap: " + ", ".join(
                                      f"{k} phase {v.phase_psnr:.1f} dB" for k, v in rows.items())))
    for pth in pics:
        console.print(f"wrote {pth}")
