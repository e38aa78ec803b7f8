"""The comparison networks, each trained within a wall-clock budget of this machine with the shipped
PtyNet-S's recipe (or a fixed number of steps), cached in ``OUTPUT/models/<name>/``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ptyfast.errors import InputError
from ptyfast.evaluation.paper.protocol import LABELS, VALIDATIONS, PaperConfig
from ptyfast.io.atomic import write_json



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
