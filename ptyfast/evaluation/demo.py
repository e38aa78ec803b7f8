"""The embedded default behind ``ptyfast demo``: simulate a held-out scan from the two bundled cat faces with the
default probe, reconstruct it with the shipped model (ONNX Runtime, no torch; the patches' phase offsets solved
from the overlaps and then fitted to the data, as ``reconstruct --fit-offsets``), optionally finish with rPIE, and
score everything against the truth on the covered pixels beside the flat and blurred baselines."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class DemoOptions:
    overlap: float = 0.75
    size: int = 600
    noise: bool = False
    photons: float = 1e6
    model: str = "ptynet-s"
    refine: int = 30
    seed: int = 0
    fit_offsets: bool = True  # reconstruct --fit-offsets: the patches' phase offsets fitted to the data


@dataclass
class DemoResult:
    scan_path: Path
    recon_path: Path
    provenance: dict
    rows: dict  # name → Quality: the network (and network + rPIE)
    baselines: dict  # name → Quality: flat, blurred
    pictures: list[Path] = field(default_factory=list)

    @property
    def gain_over_flat(self) -> tuple[float, float]:
        """(phase, amplitude) PSNR gain of the network over the flat guess, dB."""
        q, flat = next(iter(self.rows.values())), self.baselines["flat"]
        return q.phase_psnr - flat.phase_psnr, q.amplitude_psnr - flat.amplitude_psnr


def run_demo(output: str | Path, o: DemoOptions | None = None, *, log=print) -> DemoResult:
    """Run the demo into folder ``output``; ``log`` receives one line per stage."""
    from ptyfast.evaluation.figures import comparison_figure
    from ptyfast.io.atomic import ensure_dir
    from ptyfast.io.cxi import read_cxi, write_cxi
    from ptyfast.io.images import held_out_object
    from ptyfast.metrics import evaluate_against_truth, truth_on_grid
    from ptyfast.physics.probe import default_probe
    from ptyfast.physics.scanpath import raster_positions
    from ptyfast.physics.simulate import simulate_scan
    from ptyfast.runtime.output import save_previews, write_reconstruction
    from ptyfast.runtime.reconstruct import ReconstructJob, run_reconstruct

    o = o or DemoOptions()
    output = ensure_dir(output)
    obj = held_out_object((o.size, o.size))
    rng = np.random.default_rng(o.seed)
    probe = default_probe()
    positions = raster_positions(obj.shape, probe.shape, overlap=o.overlap, jitter=2.0, rng=rng)
    t = time.perf_counter()
    scan = simulate_scan(obj, probe, positions, photons=o.photons, noise=o.noise, rng=rng,
                         meta={"source": "ptyfast demo (held-out cat faces angle95/angle97)"})
    t_sim = time.perf_counter() - t
    scan_path = write_cxi(output / "demo_scan.cxi", scan)
    log(f"simulated {scan.n_frames} patterns of 128² ({o.overlap:.0%} overlap, object {o.size}², "
        f"{'Poisson noise' if o.noise else 'noise-free'}) in {t_sim:.2f} s → {scan_path}")
    lazy = read_cxi(scan_path, validate=False)  # just written (and validated) above
    fitter = None
    if o.fit_offsets:
        from ptyfast.runtime.offset_fit import fit_offsets as fitter
    rec, prov = run_reconstruct(lazy, ReconstructJob(model=o.model, offset_fitter=fitter))
    log(f"backend: {prov['backend_reason']}")
    for note in rec.notes:
        log(f"warning: {note}")
    recon_path = write_reconstruction(output / "demo_recon.h5", rec, prov)
    t_ = rec.timings
    log(f"reconstructed {rec.n_frames} patterns: {prov['patterns_per_s']:.0f} patterns/s end to end "
        f"(infer {t_['infer']:.2f} s, stitch {t_['stitch']:.2f} s"
        + (f", phase offsets fitted to the data {t_['fit_offsets']:.2f} s" if "fit_offsets" in t_ else "")
        + f", consistency {t_.get('consistency', 0):.2f} s, "
        f"model load {t_['load_model']:.2f} s) → {recon_path}")
    if rec.consistency is not None:
        log(f"data consistency ε = {rec.consistency.error:.4f} (no ground truth needed)")
    q, base, region = evaluate_against_truth(rec.object, rec.weight, rec.origin, obj)
    rows = {"PtyNet-S": q}
    shown = {"PtyNet-S": rec.object}
    if o.refine:
        from ptyfast.refine import refine_reconstruction

        t = time.perf_counter()
        res = refine_reconstruction(lazy, rec.object, positions=rec.positions, probe=rec.probe, algorithm="rpie",
                                    iterations=o.refine)
        log(f"rPIE from the network's result: {o.refine} iterations in {time.perf_counter() - t:.1f} s, "
            f"data error {res.errors[0]:.3g} → {res.errors[-1]:.3g}")
        rows[f"PtyNet-S + {o.refine} rPIE"] = evaluate_against_truth(np.asarray(res.object), rec.weight, rec.origin,
                                                                     obj)[0]
        shown[f"+ {o.refine} rPIE"] = np.asarray(res.object)
    lazy.close()
    pics = save_previews(rec, output / "demo_recon", pixel_size_m=prov.get("object_pixel_size_m"))
    pics.append(comparison_figure(output / "demo_truth_vs_recon.png", shown,
                                  truth_on_grid(obj, rec.origin, rec.object.shape), region,
                                  f"held-out scan, {o.overlap:.0%} overlap: " + ", ".join(
                                      f"{k} phase {v.phase_psnr:.1f} dB" for k, v in rows.items())))
    return DemoResult(scan_path=scan_path, recon_path=recon_path, provenance=prov, rows=rows, baselines=base,
                      pictures=pics)
