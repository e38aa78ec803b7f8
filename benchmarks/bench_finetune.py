"""Fine-tuning: the paper's Table 3 effect, speed, joint probe learning, and the Tike Siemens star.

Experiments (each prints one JSON line; run from the repository root):

  python benchmarks/bench_finetune.py table3 --model runs/ship-s/best.pt [--epochs 60] [--size 400]
      Held-out cat faces 90 (amplitude) and 91 (phase), paper probe, 50 %-overlap raster (step 64 on 128²,
      ±1 px jitter), clean and Poisson-noisy (--photons per frame): stitched amplitude/phase PSNR/SSIM
      (ptyfast.metrics.evaluate_against_truth, well-covered region) before and after fine-tuning.
  python benchmarks/bench_finetune.py speed --model runs/ship-s/best.pt [--epochs 2]
      Seconds per epoch for 256 patterns of 128² (75 %-overlap raster, the paper's A100 case), extrapolated
      to 300 epochs.
  python benchmarks/bench_finetune.py probe --model runs/ship-s/best.pt [--epochs 40]
      Scan simulated with the paper probe; fine-tuning is given it defocused by 200 µm (probe error 0.26):
      probe error (global complex factor removed) and object quality with the fixed wrong probe vs
      --learn-probe, and with the true probe for reference.
  python benchmarks/bench_finetune.py star --model runs/ship-s/best.pt [--epochs 30] [--png star.png]
      Tike Siemens star (converted, its own probe): R-factor before/after and a PNG of the stitched phase.

``pytest benchmarks/bench_finetune.py --benchmark-only`` times one fine-tuning epoch (64 patterns of 64²,
random-init PtyNet-S), records patterns/s in ``extra_info``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("PTYFAST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CATS = SHARED / "ptynet-cat-faces" / "cat_face"
STAR = SHARED / "tike-siemens-star" / "siemens-star-small.npz.bz2"


def cat_object(size: int, amp_index: int = 90, phase_index: int = 91) -> np.ndarray:
    """Held-out object: cat face ``amp_index`` as amplitude, ``phase_index`` as phase, ``size``² pixels."""
    from ptyfast.io.images import read_image
    from ptyfast.physics import object_from_images

    a = read_image(CATS / f"cat_face_angle{amp_index}.png")
    p = read_image(CATS / f"cat_face_angle{phase_index}.png")
    return object_from_images(a, p, (size, size))


def cat_scan(size: int, *, overlap: float = 0.5, noise: bool = False, photons: float | None = None,
             probe: np.ndarray | None = None, seed: int = 0):
    """Simulated held-out scan (paper probe by default, ±1 px jitter)."""
    from ptyfast.physics import paper_probe, raster_positions
    from ptyfast.physics.simulate import simulate_scan

    rng = np.random.default_rng(seed)
    probe = paper_probe() if probe is None else probe
    obj = cat_object(size)
    pos = raster_positions(obj.shape, probe.shape, overlap=overlap, jitter=1.0, rng=rng)
    return simulate_scan(obj, probe, pos, photons=photons, noise=noise, rng=rng)


def quality(obj, weight, origin, truth) -> dict:
    from ptyfast.metrics import evaluate_against_truth

    q, _, _ = evaluate_against_truth(obj, weight, origin, truth)
    return {k: round(v, 4) for k, v in q.as_dict().items() if k.endswith(("psnr", "ssim"))}


def load(model: str):
    from ptyfast.models.checkpoint import load_checkpoint, read_checkpoint

    net, man = load_checkpoint(model)
    step = read_checkpoint(model).get("step", man.training.get("steps"))
    return net, man, step


def run_finetune(scan, model_path, probe, **kw):
    from ptyfast.finetune import FinetuneOptions, finetune

    net, man, _ = load(model_path)
    return finetune(scan, net, man, probe, FinetuneOptions(**kw), source="simulated", stitch=True)


def table3(args) -> dict:
    _, man, step = load(args.model)
    out = {"experiment": "table3", "model": args.model, "model_steps": step, "size": args.size,
           "epochs": args.epochs, "batch": args.batch, "lr": args.lr, "scale": args.scale,
           "objective": args.objective, "guide_weight": args.guide_weight, "overlap": args.overlap}
    for label, noise in (("clear", False), ("noise", True)):
        scan = cat_scan(args.size, overlap=args.overlap, noise=noise, photons=args.photons if noise else None)
        t = time.perf_counter()
        r = run_finetune(scan, args.model, scan.probe, epochs=args.epochs, batch=args.batch, lr=args.lr,
                         scale=args.scale, subset=args.subset, threads=args.threads, objective=args.objective,
                         guide_weight=args.guide_weight)
        out[label] = {
            "frames": int(scan.n_frames), "photons": args.photons if noise else None,
            "before": quality(r.before, r.weight_before, r.origin, scan.truth),
            "after": quality(r.after, r.weight_after, r.origin, scan.truth),
            "r_factor": [round(r.r_factor_before, 4), round(r.r_factor_after, 4)],
            "scale": round(r.amplitude_scale, 4), "time_s": round(time.perf_counter() - t, 1),
        }
        b, a = out[label]["before"], out[label]["after"]
        out[label]["gain_db"] = {"amplitude": round(a["amplitude_psnr"] - b["amplitude_psnr"], 2),
                                 "phase": round(a["phase_psnr"] - b["phase_psnr"], 2)}
        print(json.dumps({label: out[label]}), flush=True)
    return out


def speed(args) -> dict:
    """256 patterns of 128² (16 × 16 raster at 75 % overlap), ``args.epochs`` epochs timed."""
    scan = cat_scan(32 * 15 + 128 + 2, overlap=0.75)
    idx = np.arange(256)
    scan = scan.with_(diffraction=scan.diffraction[idx], positions=scan.positions[idx])
    r = run_finetune(scan, args.model, scan.probe, epochs=args.epochs, batch=args.batch, amp=args.amp,
                     threads=args.threads)
    per_epoch = [h["time_s"] for h in r.history]
    per_epoch = np.diff([0.0] + per_epoch)
    import torch

    return {"experiment": "speed", "patterns": int(scan.n_frames), "shape": list(scan.frame_shape),
            "epochs_timed": args.epochs, "batch": args.batch, "amp": args.amp,
            "threads": torch.get_num_threads(), "s_per_epoch": [round(v, 2) for v in per_epoch],
            "total_s": round(float(np.sum(per_epoch)), 1),
            "extrapolated_300_epochs_s": round(float(np.median(per_epoch)) * 300, 0),
            "patterns_per_s": round(256 / float(np.median(per_epoch)), 1)}


def defocus(probe: np.ndarray, z: float, wavelength: float = 1e-10, pixel: float = 1e-6 / 128) -> np.ndarray:
    """``probe`` propagated by ``z`` metres (angular spectrum, Fresnel transfer function)."""
    f = np.fft.fftfreq(probe.shape[0], pixel)
    h = np.exp(-1j * np.pi * wavelength * z * (f[:, None] ** 2 + f[None, :] ** 2))
    return np.fft.ifft2(np.fft.fft2(probe) * h).astype(np.complex64)


def probe_experiment(args) -> dict:
    from ptyfast.finetune import probe_error
    from ptyfast.physics import paper_probe

    true_probe = paper_probe()
    wrong = defocus(true_probe, args.wrong_defocus)
    scan = cat_scan(args.size, probe=true_probe)
    out = {"experiment": "probe", "size": args.size, "frames": int(scan.n_frames), "epochs": args.epochs,
           "true": "paper probe", "given": f"paper probe defocused by {args.wrong_defocus:g} m",
           "probe_error_given": round(probe_error(wrong, true_probe), 4)}
    for label, probe, learn in (("true_probe", true_probe, False), ("wrong_fixed", wrong, False),
                                ("wrong_learned", wrong, True)):
        r = run_finetune(scan, args.model, probe, epochs=args.epochs, batch=args.batch, lr=args.lr,
                         learn_probe=learn, probe_step=args.probe_step, threads=args.threads,
                         probe_iterations=args.probe_iterations, scale=args.scale)
        out[label] = {"before": quality(r.before, r.weight_before, r.origin, scan.truth),
                      "after": quality(r.after, r.weight_after, r.origin, scan.truth),
                      "r_factor": [round(r.r_factor_before, 4), round(r.r_factor_after, 4)],
                      "probe_error_after": round(probe_error(r.probe, true_probe), 4)}
        if learn and args.save_probe:
            from ptyfast.finetune.output import save_probe

            save_probe(Path(args.save_probe), r.probe, stem="learned_probe")
        print(json.dumps({label: out[label]}), flush=True)
    return out


def star(args) -> dict:
    from ptyfast.finetune.output import save_preview
    from ptyfast.io.convert import load_any

    scan = load_any(STAR)
    r = run_finetune(scan, args.model, scan.probe, epochs=args.epochs, batch=args.batch, lr=args.lr,
                     subset=args.subset, threads=args.threads)
    region = r.weight_after >= 0.1 * r.weight_after.max()
    save_preview(Path(args.png), r.before, r.after, region)
    return {"experiment": "star", "frames": int(len(r.frames)), "frames_total": int(scan.n_frames),
            "epochs": args.epochs, "r_factor": [round(r.r_factor_before, 4), round(r.r_factor_after, 4)],
            "scale": round(r.amplitude_scale, 4), "time_s": round(r.time_s, 1), "png": args.png}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("experiment", choices=["table3", "speed", "probe", "star"])
    ap.add_argument("--model", default="runs/ship-s/best.pt")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--size", type=int, default=400)
    ap.add_argument("--subset", default="all")
    ap.add_argument("--scale", default="fit")
    ap.add_argument("--overlap", type=float, default=0.5, help="scan overlap of table3 (paper: 0.25-0.75)")
    ap.add_argument("--objective", default="pattern", choices=["pattern", "overlap", "guided"])
    ap.add_argument("--guide-weight", type=float, default=20.0)
    ap.add_argument("--photons", type=float, default=1e6)
    ap.add_argument("--amp", default="bf16")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--wrong-defocus", type=float, default=200e-6)
    ap.add_argument("--probe-step", type=float, default=1.0)
    ap.add_argument("--probe-iterations", type=int, default=5)
    ap.add_argument("--save-probe", default="")
    ap.add_argument("--png", default="star_finetune.png")
    args = ap.parse_args(argv)
    fn = {"table3": table3, "speed": speed, "probe": probe_experiment, "star": star}[args.experiment]
    print(json.dumps(fn(args)), flush=True)


# ----------------------------------------------------------------------------------- pytest-benchmark
def test_finetune_epoch(benchmark):
    """One fine-tuning epoch, 64 patterns of 64², random-init PtyNet-S, bf16 network, fp32 FFT (CPU)."""
    import torch

    from ptyfast.finetune import FinetuneOptions, finetune
    from ptyfast.models import build_model, get_entry
    from ptyfast.physics import fresnel_probe, random_object, raster_positions
    from ptyfast.physics.simulate import simulate_scan

    rng = np.random.default_rng(0)
    probe = fresnel_probe((64, 64), pixel_size=1e-6 / 64, photons=1e4)
    obj = random_object((64 + 7 * 16 + 2, 64 + 7 * 16 + 2), rng)
    pos = raster_positions(obj.shape, probe.shape, overlap=0.75, rng=rng)[:64]
    scan = simulate_scan(obj, probe, pos, rng=rng)
    torch.manual_seed(0)
    man = get_entry("ptynet-s").manifest(input_size=(64, 64))

    def one():
        return finetune(scan, build_model("ptynet-s"), man, probe, FinetuneOptions(epochs=1, batch=16))

    r = benchmark.pedantic(one, rounds=2, iterations=1)
    benchmark.extra_info["patterns_per_s"] = len(r.frames) / max(r.time_s, 1e-9)


if __name__ == "__main__":
    sys.exit(main())
