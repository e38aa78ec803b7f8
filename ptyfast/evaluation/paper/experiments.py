"""The paper's experiments (Tables 1–3, Figure 9) and the measurements they share."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ptyfast.evaluation.paper.protocol import LABELS, PaperConfig, simulate



def reconstruct(scan, backend):
    """Stitched reconstruction of ``scan`` with an opened backend (no consistency pass)."""
    from ptyfast.runtime.reconstruct import ReconstructJob, run_reconstruct

    rec, _ = run_reconstruct(scan, ReconstructJob(consistency=False, batch=64), backend=backend)
    return rec


def frc_curve(obj: np.ndarray, truth_grid: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FRC of the reconstruction (phase offset removed) against the truth on the region's bounding box."""
    from ptyfast.metrics import bounding_box, frc, remove_phase_offset

    box = bounding_box(region)
    r, t = obj[box], truth_grid[box]
    return frc(remove_phase_offset(r, t, region[box]), t)


def inference_memory(checkpoint, *, batch: int = 16) -> dict:
    """Memory of one fp32 torch forward pass at ``batch``: GPU peak allocation on CUDA, else the rise of this
    process's peak RSS above its resident size before the pass (activations + workspace + weights touched)."""
    import torch

    from ptyfast.machine import current_rss_bytes, peak_rss_bytes, reset_peak_rss
    from ptyfast.models.checkpoint import load_checkpoint

    net, manifest = load_checkpoint(checkpoint)
    h, w = manifest.input_size
    if torch.cuda.is_available():
        net = net.cuda()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            net(torch.zeros(batch, 1, h, w, device="cuda"))
        torch.cuda.synchronize()
        return {"bytes": int(torch.cuda.max_memory_allocated()), "kind": f"GPU ({torch.cuda.get_device_name()})"}
    x = torch.zeros(batch, 1, h, w)
    with torch.no_grad():
        net(x)  # warm-up: allocator pools, oneDNN primitives
    rss0 = current_rss_bytes()
    ok = reset_peak_rss()
    with torch.no_grad():
        net(x)
    return {"bytes": max(peak_rss_bytes() - rss0, 0) if ok else None, "kind": "host RSS rise"}


def _quality_dict(q) -> dict:
    return q.as_dict()


def _mean(dicts: list[dict]) -> dict:
    return {k: float(np.mean([d[k] for d in dicts])) for k in dicts[0]} if dicts else {}


def table2(models: dict, objects, overlaps, cfg: PaperConfig, log) -> tuple[dict, dict]:
    """Quality per model × overlap (means over objects) with the baselines; keeps object 0's images for figures."""
    from ptyfast.metrics import evaluate_against_truth, truth_on_grid
    from ptyfast.runtime.backends import open_backend

    per: dict = {name: {str(o): [] for o in overlaps} for name in models}
    base: dict = {str(o): {"flat": [], "blurred": []} for o in overlaps}
    speed: dict = {}
    keep: dict = {"truth": {}, "recon": {name: {} for name in models}, "region": {}, "frc": {name: {} for name in models}}
    scans = {(i, o): simulate(obj, o, jitter=cfg.jitter, seed=cfg.seed + 100 * i + int(100 * o))
             for i, (_, obj) in enumerate(objects) for o in overlaps}
    for name, m in models.items():
        backend, reason = open_backend(m["source"], "auto", "auto", "fp32", threads=cfg.threads or None)
        n_frames, t_infer = 0, 0.0
        with backend:
            for (i, o), scan in scans.items():
                rec = reconstruct(scan, backend)
                n_frames += scan.n_frames
                t_infer += rec.timings["infer"]
                q, b, region = evaluate_against_truth(rec.object, rec.weight, rec.origin, scan.truth)
                per[name][str(o)].append(_quality_dict(q))
                if name == next(iter(models)):
                    base[str(o)]["flat"].append(_quality_dict(b["flat"]))
                    base[str(o)]["blurred"].append(_quality_dict(next(v for k, v in b.items() if k.startswith("blurred"))))
                if i == 0:
                    tg = truth_on_grid(scan.truth, rec.origin, rec.object.shape)
                    keep["recon"][name][o] = rec.object
                    keep["truth"].setdefault(o, tg)
                    keep["region"].setdefault(o, region)
                    keep["frc"][name][o] = frc_curve(rec.object, tg, region)
        speed[name] = {"backend": reason, "patterns_per_s_infer": n_frames / max(t_infer, 1e-9), "frames": n_frames}
        log(f"{LABELS[name]}: reconstructed {n_frames} patterns ({speed[name]['patterns_per_s_infer']:.0f} patterns/s "
            f"inference, {reason.split(':')[0]})")
    t2 = {"models": {name: {o: {"mean": _mean(v), "per_object": v} for o, v in d.items()} for name, d in per.items()},
          "baselines": {o: {k: _mean(v) for k, v in d.items()} for o, d in base.items()},
          "inference": speed}
    # blurred-baseline FRC for the figure
    for o in overlaps:
        from scipy import ndimage

        t = keep["truth"][o]
        blur = ndimage.gaussian_filter(t.real, 4.0) + 1j * ndimage.gaussian_filter(t.imag, 4.0)
        keep["frc"].setdefault("blurred σ=4px", {})[o] = frc_curve(blur.astype(np.complex64), t, keep["region"][o])
    return t2, keep


def table1(models: dict, t2: dict, log) -> dict:
    from ptyfast.models.flops import count_macs_torch
    from ptyfast.models import count_parameters
    from ptyfast.models.checkpoint import load_checkpoint

    rows = {}
    for name, m in models.items():
        net, manifest = load_checkpoint(m["source"].checkpoint)
        h, w = manifest.input_size
        mem = inference_memory(m["source"].checkpoint)
        q50 = t2["models"][name]["0.5"]["mean"]
        rows[name] = {"parameters": count_parameters(net), "flops_per_pattern": 2 * count_macs_torch(net, (1, 1, h, w)),
                      "phase_mse_50": q50["phase_mse"], "phase_psnr_50": q50["phase_psnr"],
                      "phase_ssim_50": q50["phase_ssim"], "memory_bytes_batch16": mem["bytes"],
                      "memory_kind": mem["kind"],
                      "patterns_per_s": t2["inference"][name]["patterns_per_s_infer"],
                      "backend": t2["inference"][name]["backend"]}
    log("Table 1 analogue: done")
    return {"rows": rows, "baselines_50": t2["baselines"]["0.5"]}


def table3(model: dict, test: list[Path], cfg: PaperConfig, log) -> tuple[dict, dict]:
    """Clear / noisy scan of one held-out face (amplitude = phase image), before and after fine-tuning."""
    from ptyfast.finetune import FinetuneOptions, finetune
    from ptyfast.io.images import read_image
    from ptyfast.metrics import evaluate_against_truth, truth_on_grid
    from ptyfast.models.checkpoint import load_checkpoint
    from ptyfast.physics.objects import object_from_images

    img = read_image(test[0])
    obj = object_from_images(img, img, (cfg.object_size, cfg.object_size))
    out: dict = {"image": test[0].name, "overlap": cfg.finetune_overlap, "noise_photons": cfg.noise_photons,
                 "epochs": cfg.finetune_epochs, "model": cfg.finetune_model, "conditions": {}}
    panels: dict = {}
    for cond, noisy in (("clear", False), ("noise", True)):
        scan = simulate(obj, cfg.finetune_overlap, jitter=cfg.jitter, seed=cfg.seed + 7,
                        photons=cfg.noise_photons if noisy else None, noise=noisy)
        net, manifest = load_checkpoint(model["source"].checkpoint)
        log(f"Table 3: fine-tuning {LABELS[cfg.finetune_model]} on the {cond} scan ({scan.n_frames} patterns, "
            f"{cfg.finetune_epochs} epochs)")
        # the paper's method: every frame trained on, no held-out guard (``val_fraction=0``)
        res = finetune(scan, net, manifest, scan.probe,
                       FinetuneOptions(epochs=cfg.finetune_epochs, threads=cfg.threads, seed=cfg.seed,
                                       val_fraction=0.0), stitch=True)
        for stage, o, wmap in (("before", res.before, res.weight_before), ("after", res.after, res.weight_after)):
            q, b, region = evaluate_against_truth(o, wmap, res.origin, scan.truth)
            key = cond if stage == "before" else f"finetune_{cond}"
            tg = truth_on_grid(scan.truth, res.origin, o.shape)
            out["conditions"][key] = _quality_dict(q)
            panels[key] = (o, tg, region, frc_curve(o, tg, region))
            if key == "clear":
                out["baselines"] = {("flat" if k == "flat" else "blurred"): _quality_dict(v) for k, v in b.items()}
        out["conditions"][f"finetune_{cond}"]["time_s"] = float(res.time_s)
        out["conditions"][f"finetune_{cond}"]["r_factor_before"] = float(res.r_factor_before)
        out["conditions"][f"finetune_{cond}"]["r_factor_after"] = float(res.r_factor_after)
    return out, panels


def figure9(model: dict, obj: np.ndarray, cfg: PaperConfig, log) -> dict:
    from ptyfast.refine import iterations_to_reach
    from ptyfast.runtime.backends import open_backend

    out: dict = {"model": model["source"].manifest.architecture, "reference_iterations": cfg.refine_iterations,
                 "algorithm": "rpie", "batch": cfg.refine_batch, "overlaps": {}}
    backend, _ = open_backend(model["source"], "auto", "auto", "fp32", threads=cfg.threads or None)
    with backend:
        for o in cfg.refine_overlaps:
            scan = simulate(obj, o, jitter=cfg.jitter, seed=cfg.seed + 11)
            rec = reconstruct(scan, backend)
            t = time.perf_counter()
            r = iterations_to_reach(scan, rec.object, reference_init="random",
                                    reference_iterations=cfg.refine_iterations,
                                    max_iterations=cfg.refine_iterations, algorithm="rpie",
                                    positions=rec.positions, update_probe=False, batch=cfg.refine_batch,
                                    seed=cfg.seed)
            out["overlaps"][str(o)] = {
                "frames": scan.n_frames, "iterations": r["iterations"], "speedup": r["speedup"],
                "target_error": r["target_error"], "errors": np.asarray(r["errors"]).tolist(),
                "reference_errors": np.asarray(r["reference_errors"]).tolist(), "seconds": time.perf_counter() - t,
            }
            its = r["iterations"]
            log(f"Figure 9, {o:.0%} overlap: the network start reaches the random start's {cfg.refine_iterations}-"
                f"iteration error in {its if its else f'more than {cfg.refine_iterations}'} iterations")
    return out


# -- figures --------------------------------------------------------------------------------------------------
