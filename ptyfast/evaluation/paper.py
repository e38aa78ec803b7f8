"""The seed paper's experiments on its own protocol (Pan et al., iScience 2023): ``ptyfast evaluate --protocol paper``.

Protocol (as the paper's published code does it; the networks are described in ``ptyfast/models/``)
------------------------------------------------------------------------------------------------
* Objects: amplitude from one held-out cat face and phase from another (amplitude in [1/3, 1], phase in
  [π/6, π/2]), ``object_size``² pixels (paper: 608–640); probe: the bundled ``pxy_probe1000.npy``; raster scans at
  75 / 50 / 25 / 0 % overlap (steps 32 / 64 / 96 / 128 px) with 0–2 px jitter; noise-free unless stated.
* Held-out images: ``cat_face_angle90`` … ``cat_face_angle99`` when present (the shipped PtyNet-S's validation
  split), otherwise the last 10 % (at least 2) of the sorted file names. They are never trained on.
* Quality: :func:`ptyfast.metrics.evaluate_against_truth` on the stitched interior (weight ≥ 0.1·max), phase offset
  removed, PSNR with the truth's span as data range. The flat (mean) guess and the truth blurred by σ = 4 px are
  scored on the same region and printed beside every table, because the paper's Table 2 PSNRs sit at the flat
  level while its SSIMs are far above it: its metric definitions are unclear.

Experiments
-----------
* **Table 1 analogue**: PtyNet-S vs PtychoNN (and PtyNet-B) on the same simulated data: parameters, FLOPs per
  pattern, phase MSE at 50 % overlap, inference memory at batch 16 and CPU throughput. (The paper measured phase
  MSE on PtychoNN's tungsten data and GPU utilisation on an A100.)
* **Table 2**: phase PSNR / SSIM / MSE at every overlap for each model.
* **Table 3**: one held-out face as amplitude *and* phase (the paper's choice), 50 % overlap, clear and Poisson
  noise, before and after physics fine-tuning (:func:`ptyfast.finetune.finetune`), amplitude and phase. The paper
  fine-tuned PtyNet-B; here the model is PtyNet-S (``finetune_model``), the best-trained one.
* **Figure 9**: rPIE from the network's stitched object vs from a random object: iterations the network start needs
  to reach the error the random start reaches after 50 (:func:`ptyfast.refine.iterations_to_reach`).

PtychoNN and PtyNet-B are trained here with :func:`ptyfast.training.train` and the shipped PtyNet-S's recipe and
data options (read from its manifest), each within ``budget_minutes`` of this machine (a short calibration run
sets the number of steps), and cached in ``OUTPUT/models/<name>/``: a rerun skips models already trained there.
The shipped PtyNet-S is used as it is.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ptyfast.errors import InputError
from ptyfast.io.atomic import write_json

OVERLAPS = (0.75, 0.5, 0.25, 0.0)
TRAINABLE = ("ptychonn", "ptychonet", "ptynet-b")
ARCHITECTURES = ("ptynet-s",) + TRAINABLE
LABELS = {"ptynet-s": "PtyNet-S", "ptynet-s-paper": "PtyNet-S", "ptychonn": "PtychoNN", "ptychonet": "PtychoNet",
          "ptynet-b": "PtyNet-B"}
VALIDATIONS = 4  # validation passes of a budgeted training run (each picks the best checkpoint)
TEST_PATTERN = re.compile(r"cat_face_angle9\d\.", re.IGNORECASE)

# -- the paper's numbers (Pan et al., iScience 2023) ----------------------------------------------------------
#: Table 1 as printed (parameters in thousands; phase MSE on PtychoNN's tungsten data; A100 utilisation; GB).
#: The printed 5512 k / 1247 k of PtychoNN / PtychoNet are swapped: ptyfast's PtychoNN has exactly 1,247,074 parameters
#: and PtychoNet with DCGAN widths 5,510,850 (its text also gives PtychoNN 1.2 M).
PAPER_TABLE1 = {
    "ptychonn": {"parameters_k": 5512, "phase_mse": 0.0885, "gpu_share": "86 %", "gpu_memory_gb": 2.7},
    "ptychonet": {"parameters_k": 1247, "phase_mse": 0.1633, "gpu_share": "80 %", "gpu_memory_gb": 2.3},
    "ptynet-s": {"parameters_k": 325, "phase_mse": 0.0852, "gpu_share": "46 %", "gpu_memory_gb": 2.0},
}
#: Table 2: phase (PSNR dB, SSIM, MSE) per overlap; the 0 % column is not in the paper's text.
PAPER_TABLE2 = {
    "ptynet-s": {0.75: (12.919, 0.793, 0.010), 0.5: (14.349, 0.816, 0.011), 0.25: (12.353, 0.791, 0.041)},
    "ptynet-b": {0.75: (12.419, 0.802, 0.009), 0.5: (12.434, 0.799, 0.021), 0.25: (12.933, 0.797, 0.025)},
}
#: Table 3 (PtyNet-B): (PSNR, SSIM, MSE) for amplitude and phase per condition.
PAPER_TABLE3 = {
    "amplitude": {"clear": (19.603, 0.714, 0.005), "noise": (17.710, 0.689, 0.009),
                  "finetune_clear": (22.714, 0.753, 0.002), "finetune_noise": (25.312, 0.756, 0.001)},
    "phase": {"clear": (17.694, 0.691, 0.009), "noise": (16.384, 0.670, 0.013),
              "finetune_clear": (22.713, 0.748, 0.002), "finetune_noise": (25.314, 0.764, 0.001)},
}
PAPER_TRAINING = {
    "ptynet-s": "1000 epochs, batch 16, on one NVIDIA A100 80 GB, ≈ 3.2 h (100 training faces)",
    "ptynet-b": "1000 epochs, batch 64, on one NVIDIA A100 80 GB, ≈ 23.4 h (≈ 60,000 patterns, 4 overlaps)",
    "ptychonn": "same strategy as PtyNet-S (Table 1), on an A100",
}
PAPER_FINETUNE = "256 patterns of 128² (75 % overlap), all parameters, < 90 s on one A100; 300 epochs (simulated)"


@dataclass
class PaperConfig:
    """Settings of the paper-protocol run (defaults: the real run; the tests shrink every knob).

    Attributes
    ----------
    models : architectures to evaluate (``ptynet-s`` is the shipped or given weights; the others are trained).
    model_s : PtyNet-S weights (shipped name or .pt path); None = the shipped ``ptynet-s``.
    budget_minutes : wall-clock training budget per trained model on this machine.
    train_steps : fixed number of training steps instead of the budget (no calibration run).
    train_batch : training batch (None = the shipped PtyNet-S's batch, else 32).
    pool_size, train_object_size, val_size : training data: pool objects, their size, validation patterns.
    test_objects : held-out objects (pairs of different faces).
    object_size : side of each test object in pixels (paper: 608–640).
    overlaps : scan overlaps of Table 2 (subset of 0.75, 0.5, 0.25, 0).
    jitter : position jitter in pixels (uniform ± this, per axis).
    noise_photons : photons per frame of the noisy scan of Table 3 (Poisson).
    finetune_model : architecture fine-tuned in Table 3.
    finetune_epochs, finetune_overlap : fine-tuning epochs and the scan's overlap.
    refine_overlaps : overlaps of Figure 9 (subset of ``overlaps``' values or any in [0, 1)).
    refine_iterations : rPIE iterations of the random start (paper: 50).
    refine_batch : rPIE mini-batch (None: sequential, the textbook algorithm).
    experiments : any of ``table1``, ``table2``, ``table3``, ``figure9``.
    threads : CPU threads for torch (0 = default).
    seed : seeds scans, noise and training.
    """

    models: tuple[str, ...] = ARCHITECTURES
    model_s: str | None = None
    budget_minutes: float = 5.0
    train_steps: int | None = None
    train_batch: int | None = None
    pool_size: int = 160
    train_object_size: int = 320
    val_size: int = 128
    test_objects: int = 5
    object_size: int = 608
    overlaps: tuple[float, ...] = OVERLAPS
    jitter: float = 2.0
    noise_photons: float = 1e6
    finetune_model: str = "ptynet-s"
    finetune_epochs: int = 30
    finetune_overlap: float = 0.5
    refine_overlaps: tuple[float, ...] = (0.75, 0.5, 0.25)
    refine_iterations: int = 50
    refine_batch: int | None = None
    experiments: tuple[str, ...] = ("table1", "table2", "table3", "figure9")
    threads: int = 0
    seed: int = 0

    def validate(self) -> "PaperConfig":
        """Check every field; raise :class:`InputError` naming the first bad one."""
        models = tuple(m.lower() for m in self.models)
        bad = [m for m in models if m not in ARCHITECTURES]
        if bad or not models:
            raise InputError(f"--models must name some of {', '.join(ARCHITECTURES)}; found {', '.join(bad) or 'none'}.")
        self.models = models
        if not self.budget_minutes > 0:
            raise InputError(f"--budget-minutes must be positive; found {self.budget_minutes}.")
        if self.train_steps is not None and self.train_steps < 1:
            raise InputError(f"--train-steps must be at least 1; found {self.train_steps}.")
        if self.test_objects < 1:
            raise InputError(f"--test-objects must be at least 1; found {self.test_objects}.")
        if self.object_size < 140:
            raise InputError(f"--object-size must be at least 140 px (the probe is 128²); found {self.object_size}.")
        for o in tuple(self.overlaps) + tuple(self.refine_overlaps) + (self.finetune_overlap,):
            if not 0.0 <= o < 1.0:
                raise InputError(f"overlaps are fractions in [0, 1) (0.5 = 50 %); found {o}.")
        if not self.overlaps:
            raise InputError("give at least one overlap.")
        bad = [e for e in self.experiments if e not in ("table1", "table2", "table3", "figure9")]
        if bad:
            raise InputError(f"unknown experiment '{bad[0]}'; choose from table1, table2, table3, figure9.")
        if self.finetune_model not in ARCHITECTURES:
            raise InputError(f"the fine-tuned model must be one of {', '.join(ARCHITECTURES)}; found '{self.finetune_model}'.")
        if "table3" in self.experiments and self.finetune_model not in self.models:
            raise InputError(f"Table 3 fine-tunes '{self.finetune_model}', which is not among --models.")
        if self.finetune_epochs < 1 or self.refine_iterations < 1:
            raise InputError("fine-tuning epochs and refinement iterations must be at least 1.")
        if not self.noise_photons > 0:
            raise InputError(f"noise photons must be positive; found {self.noise_photons}.")
        return self


# -- inputs -------------------------------------------------------------------------------------------------------


def split_images(folder: str | os.PathLike | None) -> tuple[list[Path], list[Path], str]:
    """Held-out test images, training images and a sentence saying how they were split.

    Raises
    ------
    InputError
        No folder given, a missing folder, or fewer than two images.
    """
    from ptyfast.training.data import list_images

    if folder is None:
        raise InputError("--protocol paper needs --images DIR, the folder of the paper's cat-face PNGs "
                         "(e.g. ../shared/data/ptynet-cat-faces/cat_face).")
    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"image folder {path} does not exist or is not a folder; pass the cat-face folder with --images.")
    files = list_images([path])
    if len(files) < 2:
        raise InputError(f"image folder {path} holds {len(files)} image(s); the protocol needs at least 2 (PNG/JPEG/TIFF).")
    test = [f for f in files if TEST_PATTERN.search(f.name)]
    if len(test) >= 2:
        note = f"held out: {', '.join(f.stem for f in test[:2])} … ({len(test)} images, the shipped model's validation split)"
    else:
        k = max(2, int(round(0.1 * len(files))))
        test = files[-k:]
        note = f"held out: the last {k} of {len(files)} sorted images ({test[0].stem} … {test[-1].stem})"
    train = [f for f in files if f not in test]
    return test, train, note


def _training_files(folder: Path, test: list[Path], train: list[Path]) -> list[Path]:
    """The list handed to :func:`ptyfast.training.train`. When its own sorted split (last 10 % for validation)
    holds out exactly the test images, pass the whole folder: the test images then only pick the best checkpoint,
    exactly as for the shipped PtyNet-S; otherwise pass the training images only."""
    from ptyfast.training.data import list_images

    files = list_images([folder])
    n_val = int(round(len(files) * 0.1)) if len(files) >= 4 else 0
    if n_val and set(files[len(files) - n_val:]) == set(test):
        return files
    return train


def test_objects(test: list[Path], n: int, size: int) -> list[tuple[str, np.ndarray]]:
    """``n`` complex objects, amplitude and phase from two different held-out images (pairs 0-1, 2-3, …)."""
    from ptyfast.io.images import read_image
    from ptyfast.physics.objects import object_from_images

    out = []
    for i in range(n):
        a, p = test[(2 * i) % len(test)], test[(2 * i + 1) % len(test)]
        if a == p:
            p = test[(2 * i + 2) % len(test)]
        out.append((f"{a.stem} | {p.stem}", object_from_images(read_image(a), read_image(p), (size, size))))
    return out


def simulate(obj: np.ndarray, overlap: float, *, jitter: float, seed: int, photons: float | None = None,
             noise: bool = False):
    """The protocol's raster scan of ``obj`` with the bundled probe."""
    from ptyfast.physics.probe import paper_probe
    from ptyfast.physics.scanpath import raster_positions
    from ptyfast.physics.simulate import simulate_scan

    rng = np.random.default_rng(seed)
    probe = paper_probe()
    pos = raster_positions(obj.shape, probe.shape, overlap=overlap, jitter=jitter, rng=rng)
    return simulate_scan(obj, probe, pos, photons=photons, noise=noise, rng=rng,
                         meta={"source": f"paper protocol, {overlap:.0%} overlap"})


# -- models ---------------------------------------------------------------------------------------------------------


def _recipe(source_s) -> dict:
    """Training recipe of the shipped PtyNet-S (its manifest), so the comparison models get the same one."""
    t = dict(getattr(source_s.manifest, "training", {}) or {}) if source_s is not None else {}
    keys = ("lr", "lr_min", "schedule", "batch", "amp", "procedural_fraction", "noise_fraction", "random_probes",
            "photons", "clean_photons", "loss")
    recipe = {k: t[k] for k in keys if k in t}
    prep = getattr(source_s.manifest, "preprocessing", {}) if source_s is not None else {}
    recipe["transform"] = prep.get("transform", "sqrt")
    recipe["normalise"] = prep.get("normalise", "max")
    return recipe


def train_model(name: str, out_dir: Path, files: list[Path], cfg: PaperConfig, recipe: dict, *, log=print) -> dict:
    """Train ``name`` within the budget (or ``cfg.train_steps``); reuse a finished run in ``out_dir``.

    Returns the training summary (also written to ``out_dir/summary.json``).
    """
    from ptyfast.physics.probe import paper_probe
    from ptyfast.training.data import DataOptions
    from ptyfast.training.train import TrainOptions, train

    summary_path = out_dir / "summary.json"
    if (out_dir / "best.pt").is_file() and summary_path.is_file():
        s = json.loads(summary_path.read_text())
        log(f"{LABELS[name]}: reusing the model trained earlier in {out_dir} ({s['steps']} steps, {s['time_s']:.0f} s)")
        return {**s, "reused": True}
    probe = paper_probe()
    data = DataOptions(object_size=cfg.train_object_size, pool_size=cfg.pool_size,
                       procedural_fraction=recipe.get("procedural_fraction", 0.25),
                       noise_fraction=recipe.get("noise_fraction", 0.0),
                       random_probes=int(recipe.get("random_probes", 0)),
                       transform=recipe.get("transform", "sqrt"), normalise=recipe.get("normalise", "max"),
                       photons=tuple(recipe.get("photons", (1e5, 1e8))),
                       clean_photons=tuple(recipe["clean_photons"]) if recipe.get("clean_photons") else None)
    batch = int(cfg.train_batch or recipe.get("batch", 32))
    base = dict(model=name, batch=batch, lr=float(recipe.get("lr", 1e-4)), lr_min=float(recipe.get("lr_min", 1e-5)),
                schedule=recipe.get("schedule", "cyclic"), amp=recipe.get("amp", "bf16"), val_size=cfg.val_size,
                loss=recipe.get("loss", "mse"),
                threads=cfg.threads, seed=cfg.seed, data=data)
    t0 = time.perf_counter()
    calibration = None
    if cfg.train_steps is not None:
        steps = int(cfg.train_steps)
    else:
        budget = 60.0 * cfg.budget_minutes
        cal_steps = 6
        stamps: list[float] = []
        log(f"{LABELS[name]}: timing {cal_steps} training steps to fit the {cfg.budget_minutes:g}-minute budget")
        cal_dir = out_dir / "calibration"
        train(files, cal_dir, TrainOptions(**base, steps=cal_steps, val_every=10**9, cycle_steps=cal_steps),
              probe=probe, progress=lambda step, info: stamps.append(time.perf_counter()))
        cal_wall = time.perf_counter() - t0
        per_step = float(np.median(np.diff(stamps[:-1]))) if len(stamps) > 2 else cal_wall / cal_steps
        overhead = max(stamps[0] - t0 - per_step, 0.0) if stamps else 0.0
        # the last calibration step also ran the validation pass (and saved checkpoints)
        val_cost = max(stamps[-1] - stamps[-2] - per_step, 0.0) if len(stamps) > 1 else 0.0
        for f in cal_dir.iterdir():
            f.unlink()
        cal_dir.rmdir()
        steps = max(cal_steps, int((budget - cal_wall - 1.2 * overhead - VALIDATIONS * val_cost) / (per_step * 1.08)))
        calibration = {"seconds_per_step": per_step, "setup_s": overhead, "validation_s": val_cost,
                       "calibration_s": cal_wall}
        log(f"{LABELS[name]}: {per_step:.2f} s/step at batch {batch}, validation {val_cost:.0f} s → {steps} steps")
    opts = TrainOptions(**base, steps=steps, val_every=max(1, steps // (VALIDATIONS - 1)),
                        cycle_steps=max(1, steps // 2))
    last = [time.perf_counter()]

    def progress(step, info):
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            log(f"  {LABELS[name]} step {step}/{steps}, loss {info['loss']:.4f}")

    result = train(files, out_dir, opts, probe=probe, progress=progress)
    summary = {k: v for k, v in result.items() if k not in ("history",)}
    summary.update(total_time_s=time.perf_counter() - t0, budget_minutes=cfg.budget_minutes,
                   fixed_steps=cfg.train_steps, calibration=calibration, history=result.get("history", []))
    write_json(summary_path, summary)
    log(f"{LABELS[name]}: trained {summary['steps']} steps in {summary['total_time_s']:.0f} s, "
        f"best validation loss {summary['best_val_loss']:.4f}")
    return {**summary, "reused": False}


def resolve_models(cfg: PaperConfig, out: Path, files: list[Path], *, log=print) -> dict[str, dict]:
    """{architecture: {"source": ModelSource, "training": summary, "origin": text}} for every model."""
    from ptyfast.models.pretrained import resolve_model

    try:
        src_s = resolve_model(cfg.model_s)
    except InputError as exc:
        if cfg.model_s is None:
            raise InputError("no shipped PtyNet-S in this installation; pass its checkpoint with --model "
                             "(e.g. --model runs/ship-s/best.pt).") from None
        raise exc
    if src_s.manifest.architecture not in ("ptynet-s", "ptynet-s-paper"):
        raise InputError(f"--model must be PtyNet-S weights; {cfg.model_s} holds '{src_s.manifest.architecture}'.")
    from ptyfast.models.manifest import probe_hash
    from ptyfast.physics.probe import paper_probe

    if src_s.manifest.probe_sha256 != probe_hash(paper_probe()):
        raise InputError(
            "the paper protocol runs on the paper's probe, but this PtyNet-S was trained for another probe (the "
            "shipped model is trained for ptyfast's confined default probe); train one on the paper's probe "
            "(ptyfast train --model ptynet-s-paper --loss mse --normalise max --schedule cyclic --lr 1e-4 "
            "--probe PAPER_PROBE.npy) and pass it with --model.")
    recipe = _recipe(src_s)
    models: dict[str, dict] = {}
    for name in cfg.models:
        if name == "ptynet-s":
            models[name] = {"source": src_s, "training": dict(src_s.manifest.training or {}),
                            "origin": "shipped" if src_s.shipped else f"given ({src_s.files[0]})"}
            continue
        summary = train_model(name, out / "models" / name, files, cfg, recipe, log=log)
        models[name] = {"source": resolve_model(out / "models" / name / "best.pt"), "training": summary,
                        "origin": f"trained here ({out / 'models' / name / 'best.pt'})"}
    return models


# -- measurements -----------------------------------------------------------------------------------------------


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


# -- the run ------------------------------------------------------------------------------------------------------


def run_paper_protocol(images, output, *, console=None, config: PaperConfig | None = None) -> Path:
    """Run the paper's experiments on its protocol; write ``OUTPUT/report.md``, ``results.json`` and PNG figures.

    Parameters
    ----------
    images : path
        Folder of the cat-face images (``cat_face_abs*.png``, ``cat_face_angle*.png``).
    output : path
        Report folder (created; trained models are cached in ``OUTPUT/models``).
    console : rich Console, optional
        Progress messages (default: print).
    config : PaperConfig, optional

    Returns
    -------
    Path
        The markdown report.
    """
    from ptyfast import __version__
    from ptyfast.machine import cpu_name, gpu_name
    from ptyfast.runtime.backends import cpu_threads

    cfg = (config or PaperConfig()).validate()
    log = console.print if console is not None else print
    test, train_files, split_note = split_images(images)
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise InputError(f"report folder {out} is a file; give a folder with -o.")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise InputError(f"cannot create {out}: directory {out.parent} does not exist; create it first.")
    (out / "figures").mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    log(f"paper protocol: {len(test)} held-out and {len(train_files)} training images; {split_note}")
    files = _training_files(Path(images), test, train_files)
    models = resolve_models(cfg, out, files, log=log)
    objects = test_objects(test, cfg.test_objects, cfg.object_size)

    results: dict = {
        "ptyfast_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "hardware": {"cpu": cpu_name(), "cores": cpu_threads(), "gpu": gpu_name(), "platform": platform.platform()},
        "split": split_note, "test_images": [p.name for p in test], "objects": [n for n, _ in objects],
        "models": {k: {"origin": v["origin"], "training": v["training"], "architecture": k} for k, v in models.items()},
    }
    figs: list[Path] = []
    overlaps = sorted(set(cfg.overlaps) | ({0.5} if "table1" in cfg.experiments else set()), reverse=True)
    need_table2 = "table1" in cfg.experiments or "table2" in cfg.experiments
    if need_table2:
        t2, keep = _table2(models, objects, overlaps, cfg, log)
        results["table2"] = t2
        figs += _figure_reconstructions(out, keep, cfg)
        figs += _figure_frc(out, keep)
    if "table1" in cfg.experiments:
        results["table1"] = _table1(models, results["table2"], log)
    if "table3" in cfg.experiments:
        t3, panels = _table3(models[cfg.finetune_model], test, cfg, log)
        results["table3"] = t3
        figs += _figure_table3(out, panels, cfg)
    if "figure9" in cfg.experiments:
        f9 = _figure9(models["ptynet-s"] if "ptynet-s" in models else next(iter(models.values())), objects[0][1],
                      cfg, log)
        results["figure9"] = f9
        figs += _figure_convergence(out, f9)
    results["total_time_s"] = time.perf_counter() - t_start
    results["figures"] = [str(p.relative_to(out)) for p in figs]
    write_json(out / "results.json", results)
    report = out / "report.md"
    _write_text(report, render_report(results))
    log(f"wrote {report} ({len(figs)} figures) in {results['total_time_s'] / 60:.1f} min")
    return report


def _table2(models: dict, objects, overlaps, cfg: PaperConfig, log) -> tuple[dict, dict]:
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


def _table1(models: dict, t2: dict, log) -> dict:
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


def _table3(model: dict, test: list[Path], cfg: PaperConfig, log) -> tuple[dict, dict]:
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
        res = finetune(scan, net, manifest, scan.probe,
                       FinetuneOptions(epochs=cfg.finetune_epochs, threads=cfg.threads, seed=cfg.seed), stitch=True)
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


def _figure9(model: dict, obj: np.ndarray, cfg: PaperConfig, log) -> dict:
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


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _savefig(fig, path: Path) -> Path:
    from ptyfast.io.atomic import save_figure

    save_figure(fig, path, bbox_inches="tight", dpi=90)
    _plt().close(fig)
    return path


def _figure_reconstructions(out: Path, keep: dict, cfg: PaperConfig) -> list[Path]:
    from ptyfast.metrics import aligned_phase, bounding_box

    plt = _plt()
    ovs = sorted(keep["truth"], reverse=True)
    names = list(keep["recon"])
    fig, axes = plt.subplots(len(names) + 1, len(ovs), figsize=(3.2 * len(ovs), 3.2 * (len(names) + 1)), squeeze=False)
    for c, o in enumerate(ovs):
        box = bounding_box(keep["region"][o])
        t = keep["truth"][o][box]
        lo, hi = np.percentile(np.angle(t), [0.5, 99.5])
        rows = [("truth", np.angle(t))] + [(LABELS[n], aligned_phase(keep["recon"][n][o][box], t,
                                                                      keep["region"][o][box])) for n in names]
        for r, (label, img) in enumerate(rows):
            ax = axes[r, c]
            ax.imshow(img, cmap="twilight", vmin=lo, vmax=hi)
            ax.set_title(f"{label}, {o:.0%} overlap", fontsize=9)
            ax.axis("off")
    fig.suptitle("phase (rad) of the first held-out object, stitched interior")
    return [_savefig(fig, out / "figures" / "reconstructions.png")]


def _figure_frc(out: Path, keep: dict) -> list[Path]:
    plt = _plt()
    ovs = sorted(keep["truth"], reverse=True)
    fig, axes = plt.subplots(1, len(ovs), figsize=(4.2 * len(ovs), 3.4), squeeze=False)
    for c, o in enumerate(ovs):
        ax = axes[0, c]
        for name, curves in keep["frc"].items():
            f, v = curves[o]
            ax.plot(f, v, label=LABELS.get(name, name), ls="--" if name.startswith("blurred") else "-")
        ax.axhline(1 / 7, color="gray", lw=0.8, ls=":")
        ax.set(xlabel="spatial frequency (cycles/px)", ylabel="FRC", title=f"{o:.0%} overlap", ylim=(-0.1, 1.05))
        ax.legend(fontsize=7)
    return [_savefig(fig, out / "figures" / "frc.png")]


def _figure_table3(out: Path, panels: dict, cfg: PaperConfig) -> list[Path]:
    from ptyfast.metrics import aligned_phase, bounding_box

    plt = _plt()
    order = ["clear", "finetune_clear", "noise", "finetune_noise"]
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.6))
    o0, tg, region, _ = panels["clear"]
    box = bounding_box(region)
    t = tg[box]
    lo, hi = np.percentile(np.angle(t), [0.5, 99.5])
    axes[0].imshow(np.angle(t), cmap="twilight", vmin=lo, vmax=hi)
    axes[0].set_title("truth (phase)")
    for ax, key in zip(axes[1:], order):
        o, tgk, reg, _ = panels[key]
        bx = bounding_box(reg)
        ax.imshow(aligned_phase(o[bx], tgk[bx], reg[bx]), cmap="twilight", vmin=lo, vmax=hi)
        ax.set_title(key.replace("_", " "))
    for ax in axes:
        ax.axis("off")
    p1 = _savefig(fig, out / "figures" / "finetune.png")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for key in order:
        f, v = panels[key][3]
        ax.plot(f, v, label=key.replace("_", " "))
    ax.axhline(1 / 7, color="gray", lw=0.8, ls=":")
    ax.set(xlabel="spatial frequency (cycles/px)", ylabel="FRC", title="FRC before / after fine-tuning")
    ax.legend(fontsize=8)
    return [p1, _savefig(fig, out / "figures" / "finetune_frc.png")]


def _figure_convergence(out: Path, f9: dict) -> list[Path]:
    plt = _plt()
    ovs = list(f9["overlaps"])
    fig, axes = plt.subplots(1, len(ovs), figsize=(4.4 * len(ovs), 3.5), squeeze=False)
    for c, o in enumerate(ovs):
        d, ax = f9["overlaps"][o], axes[0, c]
        ax.semilogy(np.arange(1, len(d["reference_errors"]) + 1), d["reference_errors"], label="random start")
        ax.semilogy(np.arange(1, len(d["errors"]) + 1), d["errors"], label="PtyNet start")
        ax.axhline(d["target_error"], color="gray", ls=":", lw=0.8)
        ax.set(xlabel="rPIE iteration", ylabel="error", title=f"{float(o):.0%} overlap")
        ax.legend(fontsize=8)
    return [_savefig(fig, out / "figures" / "convergence.png")]


# -- report ---------------------------------------------------------------------------------------------------


def _cell(v, spec=".3f", none="—") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return format(v, spec)


def _budget_section(r: dict) -> list[str]:
    hw = r["hardware"]
    lines = ["## Training budget", "",
             f"Hardware: {hw['cpu']}, {hw['cores']} usable cores" + (f", GPU {hw['gpu']}" if hw["gpu"] else ", no GPU")
             + ". The paper trained on one NVIDIA A100 80 GB.", "",
             "| model | origin | steps × batch | patterns seen | wall time | best val. loss | the paper |",
             "|---|---|---|---|---|---|---|"]
    for name, m in r["models"].items():
        t = m["training"] or {}
        steps, batch = t.get("steps"), t.get("batch")
        seen = t.get("patterns_seen") or (steps * batch if steps and batch else None)
        secs = t.get("total_time_s", t.get("time_s"))
        lines.append(f"| {LABELS[name]} | {m['origin']} | {steps} × {batch} | {_cell(seen, ',')} | "
                     f"{_cell(secs / 60 if secs else None, '.1f')} min | {_cell(t.get('best_val_loss'), '.4f')} | "
                     f"{PAPER_TRAINING[name]} |")
    cfg = r["config"]
    lines += ["", f"Each model trained here had a budget of **{cfg['budget_minutes']:g} minutes** of this machine"
              + (f" (fixed at {cfg['train_steps']} steps)" if cfg["train_steps"] else "")
              + ", with the shipped PtyNet-S's recipe and data options. Against the paper's 3.2 h (PtyNet-S) and "
              "23.4 h (PtyNet-B) on an A100 — a GPU with roughly 100× the dense bf16 throughput of these two cores — "
              "that is a few ten-thousandths of the paper's compute: the trained comparison models are far from "
              "converged, and their scores below are lower bounds, not a verdict on the architectures.", ""]
    return lines


def _baseline_rows(b: dict, ncols: int, cols=("phase_psnr", "phase_ssim", "phase_mse")) -> list[str]:
    out = []
    for name, q in b.items():
        cells = " | ".join(f"{_cell(q[c], '.2f' if 'psnr' in c else '.3f' if 'ssim' in c else '.4f')}" for c in cols)
        out.append(f"| *baseline: {name}* | {cells} |" + " |" * max(ncols - len(cols) - 1, 0))
    return out


def render_report(r: dict) -> str:
    """The markdown report of a :func:`run_paper_protocol` result dict."""
    cfg = r["config"]
    L = ["# ptyfast: the seed paper's experiments on its own protocol", "",
         f"ptyfast {r['ptyfast_version']}, {r['created']}, {r['total_time_s'] / 60:.1f} min in total. "
         f"Images: {r['split']}. Test objects ({cfg['test_objects']}, {cfg['object_size']}² px, amplitude and phase "
         f"from different faces): {'; '.join(r['objects'])}. Bundled probe (Σ|P|² = 1000), raster scans with "
         f"±{cfg['jitter']:g} px jitter, noise-free unless stated; quality on the stitched interior (weight ≥ 0.1·max), "
         "phase offset removed, PSNR over the truth's span.", "",
         "**Read every number against the baselines beside it**: a flat (mean) guess and the truth blurred by "
         "σ = 4 px, scored on the same pixels. The paper's Table 2 PSNRs (12.4–14.3 dB) sit at the flat guess's "
         "level while its SSIMs (≈ 0.8) are far above it, so its metric definitions are unclear; a comparison of "
         "absolute numbers with the paper is therefore only indicative.", ""]
    L += _budget_section(r)
    if "table1" in r:
        t1 = r["table1"]
        L += ["## Table 1 analogue: PtyNet-S vs PtychoNN on the same data", "",
              "| model | parameters | GFLOP/pattern | phase MSE (50 %) | phase PSNR / SSIM (50 %) | memory, batch 16 fp32 | "
              "CPU patterns/s | paper: parameters | paper: phase MSE | paper: A100 share | paper: GPU memory |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, row in t1["rows"].items():
            p = PAPER_TABLE1.get(name, {})
            mem = row["memory_bytes_batch16"]
            L.append(f"| {LABELS[name]} | {row['parameters']:,} | {row['flops_per_pattern'] / 1e9:.3f} | "
                     f"{row['phase_mse_50']:.4f} | {row['phase_psnr_50']:.2f} dB / {row['phase_ssim_50']:.3f} | "
                     f"{_cell(mem / 2**20 if mem is not None else None, '.0f')} MB ({row['memory_kind']}) | "
                     f"{row['patterns_per_s']:.0f} | {_cell(p.get('parameters_k'), ',')} k | {_cell(p.get('phase_mse'), '.4f')} | "
                     f"{p.get('gpu_share', '—')} | {_cell(p.get('gpu_memory_gb'), '.1f')} GB |")
        for bname, q in t1["baselines_50"].items():
            L.append(f"| *baseline: {bname}* | — | — | {q['phase_mse']:.4f} | {q['phase_psnr']:.2f} dB / "
                     f"{q['phase_ssim']:.3f} | | | | | | |")
        L += ["", "The paper's phase MSE is on PtychoNN's tungsten test pattern and its resource figures on an A100; "
              "here the phase MSE is on held-out cat faces at 50 % overlap (mean over the test objects), memory is "
              "that of one fp32 forward pass at batch 16 (GPU allocation on CUDA, else the rise of the process's peak "
              "RSS), and throughput is model inference inside the reconstruct pipeline on this machine. The paper's "
              "Table 1 prints 5512 k parameters for PtychoNN and 1247 k for PtychoNet, while its text gives PtychoNN "
              "1.2 M: the two look swapped (PtychoNN as published has 1,247,074 at 128²).", ""]
    if "table2" in r:
        t2 = r["table2"]
        ovs = list(next(iter(t2["models"].values())).keys())
        L += ["## Table 2: phase quality against overlap", "",
              "| model | overlap | PSNR (dB) | SSIM | MSE | paper PSNR | paper SSIM | paper MSE | FRC res. (cyc/px) |",
              "|---|---|---|---|---|---|---|---|---|"]
        for o in ovs:
            for name, d in t2["models"].items():
                q = d[o]["mean"]
                p = PAPER_TABLE2.get(name, {}).get(float(o))
                L.append(f"| {LABELS[name]} | {float(o):.0%} | {q['phase_psnr']:.2f} | {q['phase_ssim']:.3f} | "
                         f"{q['phase_mse']:.4f} | {_cell(p[0] if p else None, '.3f')} | {_cell(p[1] if p else None, '.3f')} | "
                         f"{_cell(p[2] if p else None, '.3f')} | {q['frc_resolution']:.3f} |")
            for bname, q in t2["baselines"][o].items():
                L.append(f"| *baseline: {bname}* | {float(o):.0%} | {q['phase_psnr']:.2f} | {q['phase_ssim']:.3f} | "
                         f"{q['phase_mse']:.4f} | | | | {q['frc_resolution']:.3f} |")
        L += ["", "Means over the test objects (per-object figures in `results.json`). The paper gives no 0 % column "
              "in its text. *blurred* is the truth blurred by σ = 4 px. Where a model does not beat the flat guess, "
              "it has not learnt the mapping (see the training budget above).", "",
              "![reconstructions](figures/reconstructions.png)", "", "![FRC](figures/frc.png)", ""]
        inf = t2["inference"]
        L += ["Inference: " + "; ".join(f"{LABELS[n]} {v['patterns_per_s_infer']:.0f} patterns/s "
                                       f"({v['backend'].split(':')[0]})" for n, v in inf.items()) + ".", ""]
    if "table3" in r:
        t3 = r["table3"]
        conds = ["clear", "noise", "finetune_clear", "finetune_noise"]
        L += [f"## Table 3: noise and fine-tuning ({LABELS[t3['model']]}, {t3['image']} as amplitude and phase, "
              f"{t3['overlap']:.0%} overlap)", "",
              f"Noise: Poisson at {t3['noise_photons']:.3g} photons per frame. Fine-tuning: ptyfast.finetune "
              f"(L1 amplitude loss, paper schedule), {t3['epochs']} epochs (the paper: 300). The paper fine-tuned "
              "PtyNet-B; here the shipped PtyNet-S is fine-tuned.", "",
              "| channel | condition | PSNR (dB) | SSIM | MSE | paper PSNR | paper SSIM | paper MSE |",
              "|---|---|---|---|---|---|---|---|"]
        for ch in ("amplitude", "phase"):
            for c in conds:
                q = t3["conditions"][c]
                p = PAPER_TABLE3[ch][c]
                L.append(f"| {ch} | {c.replace('_', ' ')} | {q[f'{ch}_psnr']:.2f} | {q[f'{ch}_ssim']:.3f} | "
                         f"{q[f'{ch}_mse']:.4f} | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} |")
            for bname, q in t3.get("baselines", {}).items():
                L.append(f"| {ch} | *baseline: {bname}* | {q[f'{ch}_psnr']:.2f} | {q[f'{ch}_ssim']:.3f} | "
                         f"{q[f'{ch}_mse']:.4f} | | | |")
        ft = [t3["conditions"][c] for c in ("finetune_clear", "finetune_noise")]
        L += ["", "Fine-tuning time on this machine: " + ", ".join(
            f"{c.replace('finetune_', '')} {q['time_s']:.0f} s (R-factor {q['r_factor_before']:.3f} → "
            f"{q['r_factor_after']:.3f})" for c, q in zip(("clear", "noise"), ft))
            + f"; the paper: {PAPER_FINETUNE}.", "",
            "![fine-tuning](figures/finetune.png)", "", "![fine-tuning FRC](figures/finetune_frc.png)", ""]
    if "figure9" in r:
        f9 = r["figure9"]
        mode = "sequential" if not f9["batch"] else "batch %d" % f9["batch"]
        L += [f"## Figure 9: rPIE from the network's output vs from a random start ({LABELS[f9['model']]})", "",
              f"Iterations the network start needs to reach the error a random start reaches after "
              f"{f9['reference_iterations']} rPIE iterations (probe known and fixed, "
              f"{mode} updates). The paper shows curves only.", "",
              "| overlap | patterns | target error | iterations from the network | speed-up | seconds |",
              "|---|---|---|---|---|---|"]
        for o, d in f9["overlaps"].items():
            its = d["iterations"] if d["iterations"] else "> %d" % f9["reference_iterations"]
            L.append(f"| {float(o):.0%} | {d['frames']} | {d['target_error']:.4g} | {its} | "
                     f"{_cell(d['speedup'], '.1f')}{'×' if d['speedup'] else ''} | {d['seconds']:.0f} |")
        L += ["", "![convergence](figures/convergence.png)", ""]
    L += ["## Reproduce", "", "```", "ptyfast evaluate --protocol paper --images DIR -o OUT "
          f"--budget-minutes {cfg['budget_minutes']:g} --models {','.join(cfg['models'])}", "```", ""]
    return "\n".join(L)


# -- small helpers ----------------------------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> Path:
    from ptyfast.io.atomic import write_text

    return write_text(path, text)




__all__ = ["PaperConfig", "run_paper_protocol", "split_images", "render_report", "train_model", "test_objects",
           "PAPER_TABLE1", "PAPER_TABLE2", "PAPER_TABLE3"]
