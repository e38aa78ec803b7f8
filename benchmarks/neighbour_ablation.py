"""Does giving the network its neighbours' windows help the phase on held-out probes, at equal training budget?

Two designs continue the shipped ``ptynet-s-probe-est`` (``ptyfast/data/ptynet-s-probe-est.pt``) from the same
weights, seed and batches (objects, probes, photons, noise: one :class:`NeighbourSampler` stream):

- ``P``: the shipped architecture on the centre's 5 channels (the sampler in ``centre_only`` mode: the same
  centre data as N's, bit for bit);
- ``N``: :class:`ptyfast.training.neighbours.PtyNetSNeighbours`, the centre's 5 channels plus 4 neighbours'
  registered estimate and probe-footprint channels (17), new first-conv weights starting at zero.

Both: AdamW (weight decay 0.01), lr 2e-4 after a linear warm-up of 100 steps, constant after (the shipped model's
stage 2 used 3e-4 at batch 32, ≈ 2e-4 at batch 16 by √-scaling; a short budget needs the new zero weights of N
to move); batch 16; fp32; gradient clipping 1.0; loss ``lit`` with ``phase_weight`` 2, ``phase_mean_weight``
0.1 and the shipped heads' std (``ptyfast.training.steps.batch_loss``). Data as the shipped model's manifest: cat faces (first 90 sorted,
never cat_face_angle90…99) in pairs + 25 % procedural objects (half sample-like), 160 objects of 320²,
512-member probe family + the bundled probe in 10 % of samples, half the samples Poisson-noisy at 10⁴–10⁸ photons.

Validation (fixed, the same for every design and evaluation): probes held out from training
(``held_out_probe(kind, i)``, kinds × i = 0…2) and the Siemens star's rPIE probe (``runs/star/probe_top30.npy``),
objects from held-out faces (cat_face_angle90…99 pairs), 10⁶ photons, Poisson noise, 64 patterns per probe.
Scored per pattern on the probe's lit pixels: phase PSNR with the patch's global phase offset removed
(``ptyfast.metrics.aligned_phase``: the amplitude-weighted circular mean of the phase difference), amplitude
PSNR, each as dB over a flat guess (mean amplitude, mean phase of the truth over the lit pixels), averaged
over the patterns; and the validation ``lit`` loss.

Usage (one process per design, 1 thread each; resumable)::

    OMP_NUM_THREADS=1 python benchmarks/neighbour_ablation.py --design P --steps 3000 &
    OMP_NUM_THREADS=1 python benchmarks/neighbour_ablation.py --design N --steps 3000 &
    python benchmarks/neighbour_ablation.py --merge          # runs/neighbour-ablation/ablation.json + table.md

``--resume`` continues a design from its ``last.pt``; ``--stop-at HH:MM`` (UTC) ends a run early (evaluated and
saved at the step reached); a file ``OUT/target_steps`` holding a number changes ``--steps`` of running designs
(the schedule is constant after the warm-up, so the budget can be set once the speed is known). ``--smoke`` runs
a few steps on a tiny pool into ``runs/neighbour-ablation/smoke``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from _star import SHARED_DATA  # noqa: E402

OUT = Path("runs/neighbour-ablation")
STAR_PROBE = Path("runs/star/probe_top30.npy")
PHOTONS = 1e6


def _data_options(smoke: bool):
    from ptyfast.training.data import DataOptions

    return DataOptions(object_size=320, pool_size=8 if smoke else 160, procedural_fraction=0.25, noise_fraction=0.5,
                       photons=(1e4, 1e8), family_probes=8 if smoke else 512, given_probe_share=0.1,
                       sample_like=True, transform="sqrt", normalise="photons", conditioning="probe+estimate")


def _images():
    """(training images, held-out images) split as ``ptyfast train`` does (last 10 % of the sorted list)."""
    from ptyfast.io.images import read_image
    from ptyfast.training.data import list_images

    files = list_images([SHARED_DATA / "ptynet-cat-faces" / "cat_face"])
    n_val = int(round(len(files) * 0.1))
    train, held = files[: len(files) - n_val], files[len(files) - n_val :]
    assert not any(f.stem.startswith("cat_face_angle9") and len(f.stem) == len("cat_face_angle90") for f in train)
    return [read_image(f) for f in train], [read_image(f) for f in held], [f.name for f in held]


def _probes(smoke: bool) -> dict[str, np.ndarray]:
    from ptyfast.physics.probe import normalise_probe
    from ptyfast.physics.probe_family import HELD_OUT_KINDS, held_out_probe

    out = {f"{kind} {i}": held_out_probe(kind, i, photons=PHOTONS)
           for kind in HELD_OUT_KINDS for i in range(1 if smoke else 3)}
    try:
        star = np.load(STAR_PROBE).astype(np.complex64)
        if star.shape == (128, 128) and np.all(np.isfinite(star)):
            out["star (rPIE top 30)"] = normalise_probe(star, PHOTONS)
    except (OSError, ValueError) as exc:
        print(f"star probe not loaded: {exc}", file=sys.stderr)
    return out


def validation_sets(held_images, centre_only: bool, smoke: bool, per_probe: int, seed: int = 4) -> dict:
    """{probe name: (x, amplitude, phase, mask)} numpy, fixed by ``seed`` (identical centres for P and N)."""
    from ptyfast.training.data import DataOptions, build_pool, fixed_set
    from ptyfast.training.neighbours import NeighbourSampler

    opts = DataOptions(object_size=320, pool_size=4 if smoke else 16, procedural_fraction=0.0, noise_fraction=1.0,
                       photons=(PHOTONS, PHOTONS), family_probes=0, transform="sqrt", normalise="photons",
                       conditioning="probe+estimate")
    pool = build_pool(held_images, opts, np.random.default_rng(seed + 10_000))
    return {name: fixed_set(NeighbourSampler(pool, probe, opts, np.random.default_rng([seed, k]),
                                             centre_only=centre_only), per_probe, batch=64)
            for k, (name, probe) in enumerate(_probes(smoke).items())}


def gains(amp_pred, pha_pred, amp, pha, mask) -> tuple[np.ndarray, np.ndarray]:
    """Per-pattern (phase, amplitude) PSNR gain over the flat guess in dB on the lit pixels (offset-free phase).
    The gain is 10·log10(MSE_flat / MSE_net): the PSNR's data range cancels."""
    from ptyfast.metrics import aligned_phase, mse

    out = np.empty((len(amp), 2))
    for n in range(len(amp)):
        sel = mask[n] > 0.5
        truth = amp[n] * np.exp(1j * pha[n])
        flat_a, flat_p = float(amp[n][sel].mean()), float(pha[n][sel].mean())
        net = amp_pred[n] * np.exp(1j * pha_pred[n])
        flat = np.full_like(truth, flat_a * np.exp(1j * flat_p))
        pt = pha[n][sel]
        out[n, 0] = 10 * np.log10(mse(aligned_phase(flat, truth, sel)[sel], pt)
                                  / max(mse(aligned_phase(net, truth, sel)[sel], pt), 1e-30))
        out[n, 1] = 10 * np.log10(mse(np.full(sel.sum(), flat_a), amp[n][sel])
                                  / max(mse(amp_pred[n][sel], amp[n][sel]), 1e-30))
    return out[:, 0], out[:, 1]


def evaluate(model, sets: dict, o, std) -> dict:
    """Per probe: phase / amplitude dB over flat (mean over patterns), the lit loss; per kind and overall means."""
    import torch

    from ptyfast.training.loss import learning_figures, loss_function
    from ptyfast.training.steps import forward

    device = torch.device("cpu")
    was = model.training
    model.eval()
    table, preds_all = {}, []
    kw = {"phase_mean_weight": o.phase_mean_weight, "phase_weight": o.phase_weight}
    with torch.no_grad():
        for name, (x, amp, pha, mask) in sets.items():
            parts = [forward(model, x[s : s + 64], o, device) for s in range(0, len(x), 64)]
            pa, pp = (torch.cat([p[c] for p in parts]) for c in (0, 1))
            target = (torch.from_numpy(amp), torch.from_numpy(pha))
            m = torch.from_numpy(mask)
            loss = float(loss_function(o.loss)((pa, pp), target, m, std, **kw))
            g_p, g_a = gains(pa.numpy(), pp.numpy(), amp, pha, mask)
            table[name] = {"phase_db": float(g_p.mean()), "amplitude_db": float(g_a.mean()),
                           "phase_db_median": float(np.median(g_p)), "val_loss": loss,
                           "struct_phase": learning_figures((pa, pp), target, m, std, o.loss, **kw)["struct_phase"]}
            preds_all.append(((pa, pp), target, m))
    model.train(was)
    pred = tuple(torch.cat([p[0][c] for p in preds_all]) for c in (0, 1))
    target = tuple(torch.cat([p[1][c] for p in preds_all]) for c in (0, 1))
    mask = torch.cat([p[2] for p in preds_all])
    kinds: dict[str, list] = {}
    for name, row in table.items():
        kinds.setdefault(name.rsplit(" ", 1)[0] if name[-1].isdigit() else name, []).append(row)
    by_kind = {k: {f: float(np.mean([r[f] for r in rows])) for f in ("phase_db", "amplitude_db", "val_loss")}
               for k, rows in kinds.items()}
    held = [r for n, r in table.items() if not n.startswith("star")]
    return {"probes": table, "kinds": by_kind,
            "held_out_mean": {f: float(np.mean([r[f] for r in held])) for f in ("phase_db", "amplitude_db", "val_loss")},
            "val_loss": float(loss_function(o.loss)(pred, target, mask, std, **kw)),
            **{f"val_{k}": v for k, v in learning_figures(pred, target, mask, std, o.loss, **kw).items()}}


def _hash(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _build_model(design: str):
    from ptyfast.models.checkpoint import read_checkpoint
    from ptyfast.models.ptynet_s import PtyNetSProbeEstimate
    from ptyfast.training.neighbours import neighbours_from_shipped, shipped_probe_est_path

    if design == "N":
        return neighbours_from_shipped()
    model = PtyNetSProbeEstimate()
    model.load_state_dict(read_checkpoint(shipped_probe_est_path())["state_dict"])
    return model


def run(a) -> None:
    import torch

    from ptyfast.allocator import keep_freed_memory
    from ptyfast.physics.probe import default_probe
    from ptyfast.training.data import build_pool
    from ptyfast.training.neighbours import NeighbourSampler
    from ptyfast.training.options import TrainOptions
    from ptyfast.training.steps import batch_loss

    torch.set_num_threads(a.threads)
    keep_freed_memory()
    out = a.out / a.design
    out.mkdir(parents=True, exist_ok=True)
    t_setup = time.perf_counter()
    train_imgs, held_imgs, held_names = _images()
    data = _data_options(a.smoke)
    if a.smoke:
        train_imgs = train_imgs[:6]
    o = TrainOptions(model="ptynet-s-probe-est", steps=a.steps, batch=a.batch, lr=a.lr, lr_min=a.lr, amp="none",
                     channels_last=a.channels_last, clip=1.0, seed=a.seed, threads=a.threads, loss="lit",
                     phase_mean_weight=0.1, phase_weight=2.0, data=data)
    pool = build_pool(train_imgs, data, np.random.default_rng(a.seed))
    sampler = NeighbourSampler(pool, default_probe(), data, np.random.default_rng([a.seed, 1]),
                               centre_only=a.design == "P")
    sets = validation_sets(held_imgs, a.design == "P", a.smoke, a.per_probe)
    torch.manual_seed(a.seed)
    model = _build_model(a.design)
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    std = tuple(float(v) for v in model.heads.std)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / a.warmup))
    step, train_s, evals, resumed = 0, 0.0, [], {}
    last = out / "last.pt"
    if a.resume and last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        sampler.rng.bit_generator.state = json.loads(ck["rng_state"])
        step, train_s = ck["step"], ck["train_s"]
        previous = json.loads((out / "record.json").read_text())
        evals = [e for e in previous["evals"] if e["step"] <= step]
        resumed = {"first_batch_centre_hash": previous.get("first_batch_centre_hash"),
                   "command": previous["command"] + " ; resumed at step " + str(step) + ": python " + " ".join(sys.argv)}
        print(f"[{a.design}] resumed at step {step}", flush=True)
    setup_s = time.perf_counter() - t_setup
    record = {
        "design": a.design, "command": "python " + " ".join(sys.argv), "threads": a.threads, "torch": torch.__version__,
        "channels": sampler.channels, "parameters": sum(p.numel() for p in model.parameters()),
        "options": {k: v for k, v in asdict(o).items() if k != "data"}, "data": asdict(data),
        "optimiser": f"AdamW(lr={a.lr:g}, weight_decay={a.weight_decay:g}), linear warm-up over {a.warmup} steps "
                     "then constant; gradient clipping 1.0",
        "validation": {"probes": list(sets), "per_probe": a.per_probe, "photons": PHOTONS, "noise": "Poisson",
                       "objects": held_names, "centre_hash": _hash(v[0][:, :5] for v in sets.values())},
        "setup_s": round(setup_s, 1), "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(resumed)

    def save() -> None:
        state = {"state_dict": {k: v.detach().float().clone() if v.is_floating_point() else v.clone()
                                for k, v in model.state_dict().items()},
                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step, "train_s": train_s,
                 "rng_state": json.dumps(sampler.rng.bit_generator.state), "design": a.design}
        tmp = last.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(last)
        torch.save({"state_dict": state["state_dict"], "step": step, "design": a.design}, out / f"step{step:05d}.pt")

    def write_record() -> None:
        samples = step * a.batch
        record["budget"] = {"steps": step, "batch": a.batch, "samples": samples, "train_s": round(train_s, 1),
                            "samples_per_s": round(samples / train_s, 2) if train_s else None}
        record["evals"] = evals
        record["updated_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        tmp = out / "record.json.tmp"
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(out / "record.json")

    def do_eval() -> None:
        t = time.perf_counter()
        e = evaluate(model, sets, o, std)
        e.update(step=step, samples=step * a.batch, train_s=round(train_s, 1), eval_s=round(time.perf_counter() - t, 1))
        evals.append(e)
        hm = e["held_out_mean"]
        print(f"[{a.design}] step {step}: held-out phase {hm['phase_db']:+.3f} dB, amplitude {hm['amplitude_db']:+.3f} "
              f"dB over flat, val loss {e['val_loss']:.4f} ({e['eval_s']} s)", flush=True)
        write_record()

    if not evals:
        do_eval()
        save()
    deadline = None
    if a.stop_at:
        hh, mm = (int(v) for v in a.stop_at.split(":"))
        now = dt.datetime.now(dt.timezone.utc)
        deadline = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        if deadline < now - dt.timedelta(hours=12):
            deadline += dt.timedelta(days=1)
    model.train()
    window_t, window_loss = time.perf_counter(), []
    logf = open(out / "log.jsonl", "a")
    while step < a.steps:
        t0 = time.perf_counter()
        batch = sampler.sample(a.batch)
        if step == 0:
            record["first_batch_centre_hash"] = _hash([batch[0][:, :5], batch[1], batch[2]])
        loss = batch_loss(model, batch, o, torch.device("cpu"), std)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        train_s += time.perf_counter() - t0
        window_loss.append(float(loss.detach()))
        if step % 25 == 0:
            now = time.perf_counter()
            logf.write(json.dumps({"step": step, "loss": float(np.mean(window_loss)), "lr": sched.get_last_lr()[0],
                                   "train_s": round(train_s, 1),
                                   "samples_per_s": round(25 * a.batch / (now - window_t), 2)}) + "\n")
            logf.flush()
            window_t, window_loss = now, []
        if step % 25 == 0 and (a.out / "target_steps").exists():  # the budget, settable while both designs run
            try:
                target = int((a.out / "target_steps").read_text().split()[0])
            except (ValueError, IndexError):
                target = a.steps
            if target != a.steps and target >= step:
                print(f"[{a.design}] steps {a.steps} -> {target} ({a.out / 'target_steps'})", flush=True)
                a.steps = target
                record["options"]["steps"] = target
        stop = deadline is not None and dt.datetime.now(dt.timezone.utc) >= deadline
        if step % a.eval_every == 0 or step == a.steps or stop:
            do_eval()
            save()
        if stop:
            record["stopped_early"] = f"--stop-at {a.stop_at} reached at step {step}"
            write_record()
            print(f"[{a.design}] stopped at step {step} (--stop-at)", flush=True)
            break
    logf.close()
    write_record()


def merge(out: Path) -> dict:
    """ablation.json and table.md from both designs' records: the table at every evaluated step."""
    recs = {d: json.loads((out / d / "record.json").read_text()) for d in ("P", "N") if (out / d / "record.json").exists()}
    steps = sorted({e["step"] for r in recs.values() for e in r["evals"]})
    at = {d: {e["step"]: e for e in r["evals"]} for d, r in recs.items()}
    start = next((at[d][0] for d in ("P", "N") if d in at and 0 in at[d]), None)
    rows = []
    for s in steps:
        if s == 0:
            continue
        row = {"step": s, "samples": s * next(iter(recs.values()))["budget"]["batch"]}
        for d in ("P", "N"):
            if s in at.get(d, {}):
                row[d] = _brief(at[d][s])
        rows.append(row)
    res = {
        "question": "does giving the network its 4 neighbours' registered estimate and probe channels help phase "
                    "on held-out probes at equal training budget?",
        "commands": {d: r["command"] for d, r in recs.items()},
        "budget": {d: r.get("budget") for d, r in recs.items()},
        "optimiser": next(iter(recs.values()))["optimiser"] if recs else None,
        "validation": next(iter(recs.values()))["validation"] if recs else None,
        "same_validation_centres": len({r["validation"]["centre_hash"] for r in recs.values()}) == 1,
        "same_first_batch": len({r.get("first_batch_centre_hash") for r in recs.values()}) == 1,
        "start": _brief(start) if start else None,
        "start_P_equals_N": (bool(np.allclose([v["phase_db"] for v in at["P"][0]["probes"].values()],
                                               [v["phase_db"] for v in at["N"][0]["probes"].values()], atol=1e-4))
                             if all(d in at and 0 in at[d] for d in "PN") else None),
        "flops": flops(),
        "table": rows,
        "diagnose": {f.stem: json.loads(f.read_text()) for f in sorted(out.glob("diagnose-N-step*.json"))},
        "records": recs,
    }
    (out / "ablation.json").write_text(json.dumps(res, indent=1))
    (out / "table.md").write_text(table_md(res))
    return res


def _brief(e: dict) -> dict:
    return {"probes": {n: [round(v["phase_db"], 3), round(v["amplitude_db"], 3)] for n, v in e["probes"].items()},
            "kinds": {n: [round(v["phase_db"], 3), round(v["amplitude_db"], 3)] for n, v in e["kinds"].items()},
            "held_out_mean": [round(e["held_out_mean"]["phase_db"], 3), round(e["held_out_mean"]["amplitude_db"], 3)],
            "val_loss": round(e["val_loss"], 4), "val_struct_phase": round(e["val_struct_phase"], 4),
            "val_struct_amplitude": round(e["val_struct_amplitude"], 4)}


def table_md(res: dict) -> str:
    """Markdown: per probe kind, phase / amplitude dB over flat for start, P and N at each evaluated step."""
    start = res["start"]
    if not start:
        return ""
    names = list(start["kinds"]) + ["held-out mean (9)"]
    head = "| step (samples) | design | " + " | ".join(names) + " | val loss | struct phase |\n"
    head += "|---" * (len(names) + 4) + "|\n"

    def line(label, design, b):
        cells = [f"{b['kinds'][n][0]:+.2f} / {b['kinds'][n][1]:+.2f}" for n in names[:-1]]
        cells.append(f"{b['held_out_mean'][0]:+.2f} / {b['held_out_mean'][1]:+.2f}")
        return f"| {label} | {design} | " + " | ".join(cells) + f" | {b['val_loss']:.4f} | {b['val_struct_phase']:.3f} |\n"

    text = "phase / amplitude dB over flat (mean over 64 patterns per probe, 3 probes per kind)\n\n" + head
    text += line("0", "start", start)
    for row in res["table"]:
        for d in ("P", "N"):
            if d in row:
                text += line(f"{row['step']} ({row['samples']})", d, row[d])
    return text


def flops() -> dict:
    from ptyfast.models.flops import count_macs_torch
    from ptyfast.models.ptynet_s import PtyNetS, PtyNetSProbeEstimate
    from ptyfast.training.neighbours import PtyNetSNeighbours

    return {name: round(2 * count_macs_torch(m, (1, c, 128, 128)) / 1e9, 4) for name, m, c in (
        ("ptynet-s (1 ch)", PtyNetS(), 1), ("ptynet-s-probe-est (5 ch)", PtyNetSProbeEstimate(), 5),
        ("neighbours N (17 ch)", PtyNetSNeighbours(), 17))}


def diagnose(a) -> dict:
    """Does N use its neighbours' content? N's checkpoint at ``--diagnose STEP`` evaluated with the neighbour
    channels as trained, shuffled between patterns of the same probe (right footprints, wrong neighbours' data),
    and zeroed; plus the norm of its first-conv weights on the centre and the neighbour channels."""
    import torch

    from ptyfast.training.neighbours import PtyNetSNeighbours
    from ptyfast.training.options import TrainOptions

    torch.set_num_threads(a.threads)
    step = a.diagnose
    ck = torch.load(a.out / "N" / f"step{step:05d}.pt", map_location="cpu", weights_only=True)
    model = PtyNetSNeighbours()
    model.load_state_dict(ck["state_dict"])
    std = tuple(float(v) for v in model.heads.std)
    o = TrainOptions(model="ptynet-s-probe-est", amp="none", channels_last=False, loss="lit", phase_mean_weight=0.1,
                     phase_weight=2.0)
    _, held, _ = _images()
    sets = validation_sets(held, False, a.smoke, a.per_probe)
    w = model.encoder[0][0].weight.detach()
    res = {"step": step, "first_conv_weight_norm": {"centre (5 ch)": float(w[:, :5].norm()),
                                                     "neighbours (12 ch)": float(w[:, 5:].norm())}}
    variants = {
        "as trained": sets,
        "neighbours shuffled": {n: (np.concatenate([x[:, :5], np.roll(x[:, 5:], 1, axis=0)], axis=1), *rest)
                                for n, (x, *rest) in sets.items()},
        "neighbours zeroed": {n: (np.concatenate([x[:, :5], np.zeros_like(x[:, 5:])], axis=1), *rest)
                              for n, (x, *rest) in sets.items()},
    }
    for name, v in variants.items():
        res[name] = _brief(evaluate(model, v, o, std))
        print(f"{name:20s} held-out phase / amplitude {res[name]['held_out_mean']} dB over flat, "
              f"val loss {res[name]['val_loss']}", flush=True)
    p_path = a.out / "P" / f"step{step:05d}.pt"
    if p_path.exists():  # paired per-pattern comparison of P and N at this step (same patterns)
        from ptyfast.models.ptynet_s import PtyNetSProbeEstimate

        p_model = PtyNetSProbeEstimate()
        p_model.load_state_dict(torch.load(p_path, map_location="cpu", weights_only=True)["state_dict"])
        diff = {"phase": [], "amplitude": []}
        per_probe = {}
        for name, (x, amp, pha, mask) in sets.items():
            g = {}
            for label, m, inp in (("P", p_model, x[:, :5]), ("N", model, x)):
                m.eval()
                with torch.no_grad():
                    pa, pp = m(torch.from_numpy(np.ascontiguousarray(inp)))
                g[label] = gains(pa.numpy(), pp.numpy(), amp, pha, mask)
            dp, da = g["N"][0] - g["P"][0], g["N"][1] - g["P"][1]
            per_probe[name] = {"phase_N_minus_P_db": float(dp.mean()), "phase_se": float(dp.std(ddof=1) / np.sqrt(len(dp))),
                               "phase_N_better_fraction": float((dp > 0).mean()),
                               "amplitude_N_minus_P_db": float(da.mean())}
            if not name.startswith("star"):
                diff["phase"].append(dp)
                diff["amplitude"].append(da)
        dp, da = np.concatenate(diff["phase"]), np.concatenate(diff["amplitude"])
        res["paired_N_minus_P"] = {
            "patterns": int(len(dp)), "phase_db": float(dp.mean()), "phase_se": float(dp.std(ddof=1) / np.sqrt(len(dp))),
            "phase_N_better_fraction": float((dp > 0).mean()), "amplitude_db": float(da.mean()),
            "amplitude_se": float(da.std(ddof=1) / np.sqrt(len(da))), "per_probe": per_probe}
        print(f"paired N − P over {len(dp)} held-out patterns: phase {dp.mean():+.3f} ± {dp.std(ddof=1) / np.sqrt(len(dp)):.3f}"
              f" dB (N better on {100 * (dp > 0).mean():.0f} %), amplitude {da.mean():+.3f} dB", flush=True)
    (a.out / f"diagnose-N-step{step:05d}.json").write_text(json.dumps(res, indent=1))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--design", choices=("P", "N"))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--per-probe", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--stop-at", default="", help="HH:MM UTC: stop (evaluated and saved) once this time is reached")
    ap.add_argument("--smoke", action="store_true", help="tiny pool and validation, into OUT/smoke")
    ap.add_argument("--merge", action="store_true", help="write ablation.json and table.md from both records")
    ap.add_argument("--diagnose", type=int, default=None, metavar="STEP",
                    help="N's checkpoint at STEP with its neighbour channels shuffled / zeroed (diagnose-N-stepSTEP.json)")
    ap.add_argument("-o", "--out", type=Path, default=OUT)
    a = ap.parse_args()
    if a.smoke:
        a.out = a.out / "smoke"
    if a.merge:
        res = merge(a.out)
        print(table_md(res))
        print(json.dumps(res["flops"]))
        return
    if a.diagnose is not None:
        diagnose(a)
        return
    if not a.design:
        ap.error("--design P or N (or --merge)")
    run(a)


if __name__ == "__main__":
    main()
