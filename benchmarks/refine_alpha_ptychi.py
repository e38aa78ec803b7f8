"""rPIE's α/β on the real Tike Siemens star, scored against independent references: Pty-Chi reconstructions of the
same scan (its LSQML, a different algorithm family, run to a flat loss; and a second Pty-Chi setting), in one run.

    python -m venv /tmp/ptychi-venv && /tmp/ptychi-venv/bin/pip install torch==2.13.0 ptychi==2.2.0
    python benchmarks/refine_alpha_ptychi.py [--epochs 300] [--ptychi-python /tmp/ptychi-venv/bin/python]
        [--alphas 0.05,0.1,0.25,0.5,1.0] [--iterations 60] [--long-alphas 0.1,0.5] [--long-iterations 200]
        [--references lsqml:96,rpie:0.5:16,lsqml:32@150] [--jobs 1] [-o /tmp/alpha] [--json benchmarks/results/refine-alpha-ptychi/refine_alpha_ptychi.json]

What it does, everything on one thread (OMP/BLAS 1; ptyfast ``threads.set_threads(1)``; torch intra/inter-op 1):

1. Each reference: Pty-Chi 2.2.0 in its own venv, as a worker subprocess (never a ptyfast dependency), with the
   conventions of ``ptychi_compare.py`` (diffraction zero frequency at the corner and ``fft_shift=False``, probe
   divided by √(H·W), probe-centre positions = top-left corner + (H − 1)/2 in a buffer of ``MARGIN`` extra
   pixels, the same starting probe: the file's, scaled to the data's mean photons per frame; a unit object).
   ``lsqml:B``: Pty-Chi's LSQML with its defaults (Gaussian noise model, σ 0.5, solved object/probe step sizes ×
   0.9, the probe's intensity rescaled in epoch 0, object and probe updated from then on, object/probe ambiguity
   removed every 10 epochs, no momentum, random batches) and batch size B. ``rpie:A:B``: Pty-Chi's rPIE with
   α = A for object and probe, batch B, SGD step 1 (the settings of ``ptychi_compare.py``).
   Its displayed loss (``MSE_SQRT``: mean over all pixels of (√I_pred − √I)², accumulated over an epoch's
   batches before each update) is recorded every epoch, and checked every ``--score-every`` epochs against the
   same figure computed over all frames with Pty-Chi's forward model.
   The result is written as a ptyfast reconstruction (object, weight = Σ|P|² illumination, origin, probe) on
   ptyfast's pixel grid (the buffer cropped by ``MARGIN``), in ptyfast's gauge: the object/probe scale ambiguity
   (P·O unchanged) is fixed as ptyfast fixes it for a refined probe, |P|² summed = the data's mean photons per
   frame. A snapshot at half the epochs is written too: how much the reference still moved.
2. The candidates: ``ptyfast refine SCAN -n N --alpha A --beta A`` (the CLI, defaults otherwise: sequential
   rPIE, flat start, probe updates from iteration 2 with the probe trial).
3. ``ptyfast evaluate CANDIDATE --reference REF --json`` for every candidate and reference (phase with the global
   offset removed, amplitude as is, on the pixels both cover with weight ≥ 0.1 × max), and the same for the
   references against each other. Data error Σ(|Ψ| − √I)² / Σ I of every file with ptyfast's forward model.
   Amplitude also "gauge matched": the reference's object scaled to the candidate's probe power (P·O unchanged).
   And "registered": the same comparison after moving the candidate by its sub-pixel shift to the reference
   (phase correlation, 1/20 px, cubic spline): an object shifted against a shifted probe fits the data as well.
   PSNR's data range is the reference's phase span, so compare dB within one reference (phase MSE in rad² across).

To run the candidates on a fixed commit while the working tree changes: ``git archive HEAD ptyfast | tar -x -C
DIR``, ``git rev-parse HEAD > DIR/COMMIT``, and run this script with ``PYTHONPATH=DIR`` (recorded in the JSON).

Pty-Chi imports torchvision only for a Gaussian blur these runs do not use; where the installed torchvision
cannot load (a CUDA-built wheel beside torch+cpu), the worker stands a stub in for it and records that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from ptychi_compare import MARGIN, PTYCHI_HELPERS, mse_sqrt, start_probe  # noqa: E402  (its conventions, not a copy)

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMEXPR_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
#: ``ptyfast`` with every library on one thread (refine has no --threads option of its own)
PTYFAST = [sys.executable, "-P", "-c", "import sys; from ptyfast import threads; threads.set_threads(1); "
                                 "from ptyfast.cli import main; main(sys.argv[1:])"]

PTYCHI_WORKER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, torch
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    try:
        import torchvision  # noqa: F401
        stub = None
    except Exception as exc:
        # a torchvision wheel built for CUDA cannot load its ops beside torch+cpu; Pty-Chi imports it only for
        # GaussianBlur in a utility these runs do not use, so stand in a module that fails if it ever is used
        import types
        for m in [k for k in sys.modules if k.startswith("torchvision")]:
            del sys.modules[m]
        tv, tr = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
        class GaussianBlur:
            def __init__(self, *a, **k):
                raise RuntimeError("torchvision is unusable here: " + repr(exc))
        tr.GaussianBlur = GaussianBlur
        tv.transforms = tr
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tr
        stub = repr(exc)[:200]
    import ptychi, ptychi.api as api
    from ptychi.api.task import PtychographyTask
    """
) + PTYCHI_HELPERS + textwrap.dedent(
    """
    d = np.load(sys.argv[1])
    cfg = json.loads(sys.argv[2])
    data = torch.tensor(d["data_corner"])
    if cfg["solver"] == "lsqml":
        o = api.LSQMLOptions()
        o.reconstructor_options.noise_model = api.NoiseModels.GAUSSIAN
    elif cfg["solver"] == "rpie":
        o = api.RPIEOptions()
        o.object_options.alpha = float(cfg["alpha"])
        o.probe_options.alpha = float(cfg["alpha"])
    else:
        raise SystemExit("unknown solver " + cfg["solver"])
    configure(o, cfg["batch"], cfg["seed"])
    o.probe_options.optimization_plan.start = int(cfg["probe_start"])
    o.reconstructor_options.num_epochs = int(cfg["epochs"])
    task = make_task(o, d, data)
    fm = task.reconstructor.forward_model
    ro = o.reconstructor_options

    def arrays():
        obj = task.get_data_to_cpu("object", as_numpy=True)
        probe = task.get_data_to_cpu("probe", as_numpy=True)
        return np.asarray(obj).reshape(-1, *np.shape(obj)[-2:])[0], np.asarray(probe).reshape(-1, *np.shape(probe)[-2:])[0]

    settings = {"options_class": type(o).__name__, "batch_size": ro.batch_size, "batching_mode": str(ro.batching_mode),
                "displayed_loss_function": str(ro.displayed_loss_function), "probe_optimization_start": o.probe_options.optimization_plan.start,
                "remove_object_probe_ambiguity": o.object_options.remove_object_probe_ambiguity.enabled,
                "patch_interpolation_method": str(o.object_options.patch_interpolation_method)}
    for k in ("noise_model", "gaussian_noise_std", "momentum_acceleration_gain", "rescale_probe_intensity_in_first_epoch",
              "preconditioning_damping_factor", "single_slice_solve_obj_prb_step_size_jointly"):
        if hasattr(ro, k):
            settings[k] = str(getattr(ro, k))
    for k in ("optimal_step_size_scaler", "alpha"):
        if hasattr(o.object_options, k):
            settings["object_" + k] = float(getattr(o.object_options, k))
        if hasattr(o.probe_options, k):
            settings["probe_" + k] = float(getattr(o.probe_options, k))
    start = score(fm, data)
    print(json.dumps({"ready": True, "torch": torch.__version__, "ptychi": getattr(ptychi, "__version__", "?"),
                      "torchvision_stubbed": stub,
                      "start_score": start, "settings": settings}), flush=True)
    rows = []
    snaps = {}
    for e in range(int(cfg["epochs"])):
        t0, w0 = time.thread_time(), time.perf_counter()
        task.run(1)
        cpu, wall = time.thread_time() - t0, time.perf_counter() - w0
        row = {"epoch": e + 1, "cpu_s": cpu, "wall_s": wall,
               "tracked_loss": float(task.reconstructor.loss_tracker.table["loss"].iloc[-1])}
        se, n = int(cfg["score_every"]), int(cfg["epochs"])
        if (e + 1) % se == 0 or (e + 2) % se == 0 or e + 2 >= n or e < 3:  # pairs: the loss-bracket check
            row["score"] = score(fm, data)
        if e + 1 in cfg["snapshots"]:
            snaps[e + 1] = arrays()
        rows.append(row)
        print(json.dumps(row), flush=True)
    obj, probe = arrays()
    np.savez(sys.argv[3], object=obj, probe=probe,
             **{f"object_{k}": v[0] for k, v in snaps.items()}, **{f"probe_{k}": v[1] for k, v in snaps.items()})
    print(json.dumps({"done": True}), flush=True)
    """
)


def parse_reference(spec: str, epochs: int) -> dict:
    """``lsqml:B`` or ``rpie:ALPHA:B``, each optionally ``@EPOCHS`` (default ``--epochs``) → the worker's settings."""
    spec, _, n = spec.partition("@")
    parts = spec.split(":")
    n = int(n) if n else epochs
    if parts[0] == "lsqml" and len(parts) == 2:
        return {"name": f"lsqml_b{parts[1]}", "solver": "lsqml", "batch": int(parts[1]), "probe_start": 0, "epochs": n}
    if parts[0] == "rpie" and len(parts) == 3:
        return {"name": f"rpie_a{parts[1]}_b{parts[2]}", "solver": "rpie", "alpha": float(parts[1]),
                "batch": int(parts[2]), "probe_start": 0, "epochs": n}
    raise SystemExit(f"--references: cannot read '{spec}' (lsqml:BATCH or rpie:ALPHA:BATCH, optionally @EPOCHS)")


def data_error(frames: np.ndarray, obj: np.ndarray, probe: np.ndarray, positions: np.ndarray) -> float:
    """Σ(|Ψ| − √I)² / Σ I with ptyfast's forward model (refine's error definition, over all frames)."""
    return mse_sqrt(frames, obj, probe, positions) * frames.size / float(frames.sum())


def run_logged(cmd: list[str], log: Path, env: dict, ok=(0,)) -> tuple[float, float, int]:
    """Run ``cmd`` with its output in ``log``; returns (wall s, CPU s of the child, exit code)."""
    t0, r0 = time.perf_counter(), os.times()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
    r1 = os.times()
    if rc not in ok:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {rc}; see {log}")
    return (time.perf_counter() - t0, (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system),
            rc)


def run_reference(ref: dict, npz: Path, out: Path, a, env: dict) -> dict:
    """One Pty-Chi reconstruction through the worker; returns its record (loss curve, times) and the arrays."""
    cfg = {**ref, "seed": 0, "score_every": a.score_every, "snapshots": [ref["epochs"] // 2]}
    result = out / f"ref_{ref['name']}.npz"
    t0 = time.perf_counter()
    worker = subprocess.Popen([a.ptychi_python, "-c", PTYCHI_WORKER, str(npz), json.dumps(cfg), str(result)],
                              stdout=subprocess.PIPE, text=True, env=env)
    hello, rows = None, []
    for line in worker.stdout:
        msg = json.loads(line)
        if hello is None:
            hello = msg
            print(f"  Pty-Chi {hello['ptychi']} (torch {hello['torch']}) {ref['name']}: start score "
                  f"{hello['start_score']:.5g}", flush=True)
        elif "epoch" in msg:
            rows.append(msg)
            if msg["epoch"] % 10 == 0 or msg["epoch"] <= 3:
                print(f"  {ref['name']} epoch {msg['epoch']:4d}: {msg['cpu_s']:.2f} CPU-s, loss "
                      f"{msg['tracked_loss']:.5g}" + (f", score {msg['score']:.5g}" if "score" in msg else ""),
                      flush=True)
    if worker.wait() != 0 or not result.exists():
        raise SystemExit(f"the Pty-Chi worker for {ref['name']} failed (exit {worker.returncode})")
    return {"hello": hello, "rows": rows, "wall_s": time.perf_counter() - t0, "npz": result}


def flatness(rows: list[dict], window: int) -> dict:
    """How flat the tracked loss is at the end: its relative fall over the last ``window`` epochs."""
    loss = np.array([r["tracked_loss"] for r in rows])
    w = min(window, len(loss) - 1)
    return {"window_epochs": int(w), "loss_then": float(loss[-1 - w]), "loss_end": float(loss[-1]),
            "relative_fall": float((loss[-1 - w] - loss[-1]) / loss[-1 - w])}


def loss_checks(rows: list[dict], start: float) -> dict:
    """Pty-Chi's tracked loss is the mean over an epoch before each batch's update: it should lie between the
    previous epoch-end score and this one's (within 10 %), and fall."""
    scored = [(i, r) for i, r in enumerate(rows) if "score" in r]
    ok, worst = 0, 0.0
    for i, r in scored:
        if i == 0:
            prev = start
        elif "score" in rows[i - 1]:
            prev = rows[i - 1]["score"]
        else:
            continue
        lo, hi = min(prev, r["score"]) * 0.9, max(prev, r["score"]) * 1.1
        inside = lo <= r["tracked_loss"] <= hi
        ok += inside
        worst = max(worst, abs(r["tracked_loss"] / r["score"] - 1))
    checked = sum(1 for i, r in scored if i == 0 or "score" in rows[i - 1])
    loss = np.array([r["tracked_loss"] for r in rows])
    return {"tracked_within_bracket": f"{ok}/{checked}", "max_rel_diff_tracked_vs_score": worst,
            "epochs_loss_rose": int(np.sum(np.diff(loss[1:]) > 0)), "loss_min": float(loss[1:].min()) if len(loss) > 1 else None}


def write_reference(path: Path, obj_buffer: np.ndarray, probe_pc: np.ndarray, shape, positions: np.ndarray,
                    photons_per_frame: float, hw: tuple[int, int], provenance: dict) -> dict:
    """A Pty-Chi result as a ptyfast reconstruction file on ptyfast's grid and gauge; returns the gauge facts."""
    from ptyfast.refine.output import illumination
    from ptyfast.runtime.output import write_reconstruction
    from ptyfast.runtime.reconstruct import Reconstruction

    obj = np.asarray(obj_buffer)[MARGIN:MARGIN + shape[0], MARGIN:MARGIN + shape[1]].astype(np.complex64)
    probe = np.asarray(probe_pc, np.complex64) * np.float32(np.sqrt(hw[0] * hw[1]))  # → ptyfast's ortho FFT
    power = float(np.sum(np.abs(probe) ** 2))
    c = np.sqrt(photons_per_frame / power)
    probe, obj = (probe * c).astype(np.complex64), (obj / c).astype(np.complex64)
    weight = illumination(probe, positions, shape)
    write_reconstruction(path, Reconstruction(object=obj, weight=weight, positions=positions,
                                              origin=np.zeros(2), probe=probe, n_frames=len(positions)),
                         {**provenance, "object_pixel_size_m": float("nan")})
    return {"probe_power_over_data_photons_before": power / photons_per_frame, "probe_scaled_by": float(c),
            "object_mean_amplitude_covered": float(np.mean(np.abs(obj)[weight >= 0.1 * weight.max()]))}


def evaluate(cand: Path, ref: Path, json_path: Path, env: dict) -> dict:
    run_logged(PTYFAST + ["evaluate", str(cand), "--reference", str(ref), "--json", str(json_path)],
               json_path.with_suffix(".log"), env)
    return json.loads(json_path.read_text())


def registration(a_path: Path, b_path: Path) -> list[float]:
    """Sub-pixel shift (y, x) between two files' objects over the well-covered box (phase offset removed)."""
    from skimage.registration import phase_cross_correlation

    from ptyfast.metrics import bounding_box, remove_phase_offset
    from ptyfast.runtime.output import read_reconstruction

    a, b = read_reconstruction(a_path), read_reconstruction(b_path)
    region = (a["weight"] >= 0.1 * a["weight"].max()) & (b["weight"] >= 0.1 * b["weight"].max())
    box = bounding_box(region)
    oa, ob = a["object"][box], b["object"][box]
    ob = remove_phase_offset(ob, oa, region[box])
    shift = phase_cross_correlation(oa, ob, upsample_factor=20)[0]
    return [float(v) for v in shift]


def build_references(a, refs, ctx, env) -> dict:
    """Run (or reuse, with ``--skip-existing``) every Pty-Chi reference and write it as a ptyfast reference file."""
    from ptyfast.runtime.output import read_reconstruction

    frames, pos, shape, photons, (h, w) = ctx["frames"], ctx["pos"], ctx["shape"], ctx["photons"], ctx["hw"]
    records = {}
    for ref in refs:
        rec_path = a.output / f"ref_{ref['name']}.json"
        if a.skip_existing and rec_path.exists() and (a.output / f"ref_{ref['name']}.npz").exists():
            rec = json.loads(rec_path.read_text())
            rec["npz"] = a.output / f"ref_{ref['name']}.npz"
        else:
            print(f"Pty-Chi reference {ref['name']} …", flush=True)
            rec = run_reference(ref, ctx["npz"], a.output, a, env)
            rec_path.write_text(json.dumps({k: v for k, v in rec.items() if k != "npz"}, default=str))
        arrays = np.load(rec["npz"])
        rows = rec["rows"]
        cpu = np.array([r["cpu_s"] for r in rows])
        prov = {"source": str(a.data), "code": f"Pty-Chi {rec['hello']['ptychi']}", **ref}
        final_h5 = a.output / f"ref_{ref['name']}.h5"
        epochs = len(rows)
        gauge = write_reference(final_h5, arrays["object"], arrays["probe"], shape, pos, photons, (h, w),
                                {**prov, "epochs": epochs})
        half = epochs // 2
        half_h5 = a.output / f"ref_{ref['name']}_epoch{half}.h5"
        write_reference(half_h5, arrays[f"object_{half}"], arrays[f"probe_{half}"], shape, pos, photons, (h, w),
                        {**prov, "epochs": half})
        written = read_reconstruction(final_h5)
        ptyfast_err = data_error(frames, written["object"], written["probe"], pos)
        scored = [r for r in rows if "score" in r]
        records[ref["name"]] = fr = {
            "settings": {**ref, "epochs": epochs, "seed": 0, **rec["hello"]["settings"]},
            "ptychi": rec["hello"]["ptychi"], "torch": rec["hello"]["torch"],
            "torchvision_stubbed": rec["hello"].get("torchvision_stubbed"),
            "start_score": rec["hello"]["start_score"],
            "final_tracked_loss": rows[-1]["tracked_loss"], "final_score": scored[-1]["score"],
            "final_data_error_own_model": scored[-1]["score"] * frames.size / float(frames.sum()),
            "final_data_error_ptyfast_model": ptyfast_err,
            "flatness": flatness(rows, a.flat_window), "loss_checks": loss_checks(rows, rec["hello"]["start_score"]),
            "cpu_s_per_epoch_median": float(np.median(cpu[1:])), "cpu_s_total": float(cpu.sum()),
            "wall_s": rec["wall_s"], "gauge": gauge, "file": str(final_h5), "half_epochs": half,
            "half_file": str(half_h5),
            "loss_curve": [{k: r[k] for k in ("epoch", "tracked_loss", "score") if k in r} for r in rows],
        }
        print(f"  {ref['name']}: loss {fr['final_tracked_loss']:.5g} (fell {100 * fr['flatness']['relative_fall']:.2f} % "
              f"over the last {fr['flatness']['window_epochs']} epochs), data error {fr['final_data_error_own_model']:.5g} "
              f"own model / {ptyfast_err:.5g} ptyfast's, {fr['cpu_s_per_epoch_median']:.2f} CPU-s/epoch", flush=True)
    return records


def run_candidates(a, ctx, env) -> list[dict]:
    """``ptyfast refine`` at every α = β (and the long runs), through the CLI on one thread."""
    import h5py

    jobs = [(al, a.iterations) for al in (float(v) for v in a.alphas.split(","))]
    jobs += [(al, a.long_iterations) for al in (float(v) for v in a.long_alphas.split(",") if v)]
    cands = []
    for alpha, n in jobs:
        out = a.output / f"rpie_{alpha:g}_n{n}.h5"
        cmd = PTYFAST + ["refine", str(a.data), "-n", str(n), "--alpha", f"{alpha:g}", "--beta", f"{alpha:g}",
                         "--no-png", "-o", str(out)]
        times = out.with_suffix(".times.json")
        if a.skip_existing and out.exists() and times.exists():
            wall, cpu, rc = (json.loads(times.read_text()) + [0])[:3]
        else:
            print(f"ptyfast refine α = β = {alpha:g}, {n} iterations …", flush=True)
            # exit 1: refine stopped a diverging run and wrote its best iterate (kept and scored, marked diverged)
            wall, cpu, rc = run_logged(cmd, out.with_suffix(".log"), env, ok=(0, 1))
            if rc == 1 and not out.exists():
                raise SystemExit(f"refine failed without output; see {out.with_suffix('.log')}")
            times.write_text(json.dumps([wall, cpu, rc]))
        with h5py.File(out, "r") as f:
            diverged, message = bool(f.attrs.get("diverged", False)), str(f.attrs.get("message", ""))
            meta = json.loads(f.attrs["meta"])
            errors, timings = f["errors"][()], f["timings"][()]
            obj, cprobe, cpos = f["object"][()], f["probe"][()], f["positions"][()]
        cands.append({"alpha": alpha, "beta": alpha, "iterations": n, "file": str(out),
                      "command": "ptyfast refine " + " ".join(cmd[4:]) + "  (every library on 1 thread)",
                      "wall_s": wall, "cpu_s": cpu, "exit_code": rc, "diverged": diverged, "message": message,
                      "iterations_run": int(len(errors)), "s_per_iteration_median": float(np.median(timings)),
                      "errors_every_10": [float(v) for v in errors[::10]], "min_error_refine": float(errors.min()),
                      "min_error_iteration": int(np.argmin(errors)) + 1,
                      "final_error_refine": float(errors[-1]),
                      "data_error": data_error(ctx["frames"], obj, cprobe, cpos),
                      "probe_trial": meta.get("probe_trial"),
                      "probe_power_over_data_photons": float(np.sum(np.abs(cprobe) ** 2)) / ctx["photons"]})
        c = cands[-1]
        print(f"  α = β = {alpha:g}, {n} it.: data error {c['data_error']:.5g}, probe "
              f"{(c['probe_trial'] or {}).get('kept')}, {wall:.0f} s" + (f"; DIVERGED: {message}" if diverged else ""),
              flush=True)
    return cands


def gauge_matched_amplitude(cand: Path, ref: Path) -> dict:
    """Amplitude PSNR with the reference moved to the candidate's gauge: its object scaled by √(Σ|P_ref|² / Σ|P_cand|²)
    (P·O unchanged), so that a candidate whose probe was held at the file's power (object absorbing the scale) is
    not scored on the convention; same code as ``evaluate --reference`` (``evaluate_against_reference``)."""
    from ptyfast.metrics import evaluate_against_reference
    from ptyfast.runtime.output import read_reconstruction

    c, r = read_reconstruction(cand), read_reconstruction(ref)
    s = float(np.sqrt(np.sum(np.abs(r["probe"]) ** 2) / np.sum(np.abs(c["probe"]) ** 2)))
    q = evaluate_against_reference(c["object"], c["weight"], np.asarray(c["origin"]) - np.asarray(r["origin"]),
                                   (r["object"] * s).astype(np.complex64), r["weight"])[0]
    return {"amplitude_psnr_gauge_matched": q.amplitude_psnr, "reference_scaled_by": s,
            "phase_psnr_in_process": q.phase_psnr}


def registered_scores(cand: Path, ref: Path) -> dict:
    """Phase / amplitude PSNR after moving the candidate by its sub-pixel shift to the reference (a global shift of
    the object against the probe is an ambiguity of ptychography with a refined probe, not an error of the
    object). Shift from the phase correlation of the well-covered box (1/20 px), applied to the whole object by
    a cubic-spline shift; then the same comparison as
    ``evaluate --reference`` (``evaluate_against_reference``)."""
    from scipy import ndimage
    from skimage.registration import phase_cross_correlation

    from ptyfast.metrics import bounding_box, evaluate_against_reference, remove_phase_offset
    from ptyfast.runtime.output import read_reconstruction

    c, r = read_reconstruction(cand), read_reconstruction(ref)
    region = (c["weight"] >= 0.1 * c["weight"].max()) & (r["weight"] >= 0.1 * r["weight"].max())
    box = bounding_box(region)
    moving = remove_phase_offset(c["object"][box], r["object"][box], region[box])
    shift = phase_cross_correlation(r["object"][box], moving, upsample_factor=20)[0]
    # cubic-spline shift of the real and imaginary parts: local, unlike a Fourier shift, which rings a diverged
    # pixel (|O| up to 270 at α = 0.05) over the whole object
    o = c["object"]
    moved = (ndimage.shift(o.real, shift, order=3, mode="nearest")
             + 1j * ndimage.shift(o.imag, shift, order=3, mode="nearest")).astype(np.complex64)
    q = evaluate_against_reference(moved, c["weight"], np.asarray(c["origin"]) - np.asarray(r["origin"]),
                                   r["object"], r["weight"])[0]
    return {"shift_px": [float(v) for v in shift], "phase_psnr_registered": q.phase_psnr,
            "phase_mse_registered": q.phase_mse, "amplitude_psnr_registered": q.amplitude_psnr}


def q_of(q: dict) -> dict:
    r = q["reconstruction"]
    return {"phase_psnr": r["phase_psnr"], "amplitude_psnr": r["amplitude_psnr"], "phase_ssim": r["phase_ssim"],
            "phase_mse": r["phase_mse"], "amplitude_mse": r["amplitude_mse"],
            "pixels": r["pixels"], "flat_phase_psnr": q["flat"]["phase_psnr"],
            "flat_amplitude_psnr": q["flat"]["amplitude_psnr"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=300, help="Pty-Chi epochs per reference (unless REF@EPOCHS)")
    ap.add_argument("--ptychi-python", default="/tmp/ptychi-venv/bin/python")
    ap.add_argument("--data", type=Path, default=REPO / "runs" / "star" / "star.cxi")
    ap.add_argument("--alphas", default="0.05,0.1,0.25,0.5,1.0")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--long-alphas", default="0.1,0.5")
    ap.add_argument("--long-iterations", type=int, default=200)
    ap.add_argument("--references", default="lsqml:96,rpie:0.5:16,lsqml:32@150",
                    help="Pty-Chi references, the first the main one: lsqml:BATCH or rpie:ALPHA:BATCH")
    ap.add_argument("--score-every", type=int, default=25)
    ap.add_argument("--flat-window", type=int, default=50)
    ap.add_argument("--jobs", type=int, choices=(1, 2), default=1,
                    help="2: the Pty-Chi references run beside the ptyfast candidates (two 1-thread processes)")
    ap.add_argument("-o", "--output", type=Path, default=Path("/tmp/alpha"), help="folder for the HDF5 files and logs")
    ap.add_argument("--json", type=Path,
                    default=REPO / "benchmarks" / "results" / "refine-alpha-ptychi" / "refine_alpha_ptychi.json")
    ap.add_argument("--skip-existing", action="store_true", help="reuse references / candidates already in -o")
    ap.add_argument("--note", default="", help="free text stored in the JSON (e.g. how the run was resumed)")
    a = ap.parse_args(argv)
    a.data, a.output = a.data.resolve(), a.output.resolve()
    os.environ.update(ONE_THREAD)
    env = {**os.environ, **ONE_THREAD}

    from ptyfast import __version__, threads
    from ptyfast.io import load_any
    from ptyfast.scan import object_grid

    threads.set_threads(1)
    if not Path(a.ptychi_python).exists():
        sys.exit(f"{a.ptychi_python} does not exist: install Pty-Chi in its own venv (see the docstring)")
    a.output.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    scan = load_any(a.data)
    frames = scan.frames(0, scan.n_frames)
    h, w = scan.frame_shape
    pos = np.asarray(scan.positions, np.float64)
    shape = object_grid(np.maximum(pos, 0), (h, w), origin=(0.0, 0.0))[1]  # as refine() builds it
    photons = float(frames.sum(axis=(1, 2)).mean())
    probe = start_probe(scan)
    refs = [parse_reference(s, a.epochs) for s in a.references.split(",")]
    print(f"{a.data}: {scan.n_frames} frames {h}×{w}, object {shape[0]}×{shape[1]}, {photons:.4g} photons/frame; "
          f"references {[(r['name'], r['epochs']) for r in refs]} (epochs); 1 thread per process, {a.jobs} at a time",
          flush=True)
    npz = a.output / "star_for_ptychi.npz"
    np.savez(npz, data_corner=np.fft.ifftshift(frames, axes=(-2, -1)).astype(np.float32),
             probe=(probe / np.sqrt(h * w)).astype(np.complex64),
             centres=pos + MARGIN + (np.array([h, w]) - 1) / 2.0,
             buffer=np.array([shape[0] + 2 * MARGIN, shape[1] + 2 * MARGIN]))
    ctx = {"frames": frames, "pos": pos, "shape": shape, "photons": photons, "hw": (h, w), "npz": npz}

    # 1 + 2: references and candidates (side by side with --jobs 2)
    if a.jobs == 2:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as ex:
            fut = ex.submit(build_references, a, refs, ctx, env)
            cands = run_candidates(a, ctx, env)
            ref_records = fut.result()
    else:
        ref_records = build_references(a, refs, ctx, env)
        cands = run_candidates(a, ctx, env)

    # 3. scores: every candidate against every reference and against the main reference's half-way snapshot
    targets = {name: Path(fr["file"]) for name, fr in ref_records.items()}
    first = next(iter(ref_records.values()))  # the main reference's half-way snapshot: does the ranking hold there?
    targets[f"{next(iter(ref_records))}_epoch{first['half_epochs']}"] = Path(first["half_file"])
    table = []
    for c in cands:
        row = {"alpha": c["alpha"], "iterations": c["iterations"], "data_error": c["data_error"],
               "probe_kept": (c["probe_trial"] or {}).get("kept"), "diverged": c["diverged"]}
        for name, ref_file in targets.items():
            row[name] = {**q_of(evaluate(Path(c["file"]), ref_file,
                                         a.output / f"eval_{Path(c['file']).stem}_vs_{name}.json", env)),
                         **gauge_matched_amplitude(Path(c["file"]), ref_file),
                         **registered_scores(Path(c["file"]), ref_file)}
        table.append(row)
        print(f"α = β = {c['alpha']:g}, {c['iterations']:3d} it.: " + "; ".join(
            f"{n} {row[n]['phase_psnr']:.2f} / {row[n]['amplitude_psnr']:.2f} dB, registered "
            f"{row[n]['phase_psnr_registered']:.2f} / {row[n]['amplitude_psnr_registered']:.2f} dB "
            f"(shift {row[n]['shift_px'][0]:+.2f}, {row[n]['shift_px'][1]:+.2f} px)" for n in ref_records)
            + f"; data error {c['data_error']:.5g}", flush=True)
    names = list(ref_records)
    between = {}
    for i, n1 in enumerate(names):
        f1 = Path(ref_records[n1]["file"])
        half = ref_records[n1]["half_epochs"]
        between[f"{n1} epoch {half} vs {n1}"] = q_of(evaluate(Path(ref_records[n1]["half_file"]), f1,
                                                                a.output / f"eval_{n1}_half_vs_final.json", env))
        for n2 in names[i + 1:]:
            between[f"{n2} vs {n1}"] = q_of(evaluate(Path(ref_records[n2]["file"]), f1,
                                                     a.output / f"eval_{n2}_vs_{n1}.json", env))
    shifts = {}
    for name, fr in ref_records.items():
        for c in cands:
            if c["iterations"] == a.iterations and c["alpha"] in (0.1, 0.5):
                shifts[f"{name} vs rpie {c['alpha']:g}"] = registration(Path(c["file"]), Path(fr["file"]))
    for k, v in between.items():
        print(f"{k}: phase {v['phase_psnr']:.2f} / amplitude {v['amplitude_psnr']:.2f} dB")
    for k, v in shifts.items():
        print(f"registration shift (y, x) px, {k}: {v}")

    rankings = {}
    for name in targets:
        rankings[name] = {}
        for n in sorted({r["iterations"] for r in table}):
            rows = [r for r in table if r["iterations"] == n]
            best = max(r[name]["phase_psnr"] for r in rows)
            rankings[name][f"{n}_iterations"] = {
                "phase_best_first": [r["alpha"] for r in sorted(rows, key=lambda r: -r[name]["phase_psnr"])],
                "amplitude_best_first": [r["alpha"] for r in sorted(rows, key=lambda r: -r[name]["amplitude_psnr"])],
                "amplitude_gauge_matched_best_first": [
                    r["alpha"] for r in sorted(rows, key=lambda r: -r[name]["amplitude_psnr_gauge_matched"])],
                "within_0.5_dB_of_best_phase": [r["alpha"] for r in rows if r[name]["phase_psnr"] >= best - 0.5],
                "phase_registered_best_first": [
                    r["alpha"] for r in sorted(rows, key=lambda r: -r[name]["phase_psnr_registered"])],
                "within_0.5_dB_of_best_phase_registered": [
                    r["alpha"] for r in rows if r[name]["phase_psnr_registered"]
                    >= max(x[name]["phase_psnr_registered"] for x in rows) - 0.5]}
    main_ref = ref_records[names[0]]
    import ptyfast

    src = Path(ptyfast.__file__).resolve().parent
    commit = (src.parent / "COMMIT").read_text().strip() if (src.parent / "COMMIT").exists() else None
    if commit is None:
        git = subprocess.run(["git", "-C", str(src.parent), "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(src.parent), "status", "--porcelain", "ptyfast"], capture_output=True,
                               text=True).stdout.strip()
        commit = git.stdout.strip() + (" + uncommitted changes" if dirty else "")
    out = {
        "command": "python benchmarks/refine_alpha_ptychi.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "note": a.note,
        "versions": {"ptyfast": __version__, "ptyfast_source": str(src), "ptyfast_commit": commit, "python": platform.python_version(), "numpy": np.__version__,
                     "ptychi": main_ref["ptychi"], "torch_ptychi": main_ref["torch"],
                     "torchvision_stubbed": main_ref["torchvision_stubbed"],
                     "machine": platform.processor() or platform.machine(), "threads_per_process": 1,
                     "processes_at_a_time": a.jobs},
        "scan": {"file": str(a.data), "frames": scan.n_frames, "frame_shape": [h, w], "object_shape": list(shape),
                 "photons_per_frame": photons},
        "protocol": {
            "evaluate": "ptyfast evaluate CANDIDATE --reference REF --json (coverage 0.1 of each weight's max; phase "
                        "with the global offset removed, PSNR over the reference's phase span; amplitude as is)",
            "amplitude_psnr_gauge_matched": "the same comparison with the reference's object scaled by "
                                            "sqrt(sum|P_ref|^2/sum|P_cand|^2) (P*O unchanged)",
            "reference_grid": f"Pty-Chi's buffer cropped by {MARGIN} px = ptyfast refine's grid (origin 0, 0)",
            "reference_gauge": "object/probe scale fixed as ptyfast fixes a refined probe: sum|P|^2 (ortho FFT) = "
                               "data's mean photons per frame, P*O unchanged",
            "data_error": "sum((|Psi|-sqrt(I))^2)/sum(I) over all frames with ptyfast's forward model "
                          "(references also with Pty-Chi's own)"},
        "references": ref_records, "candidates": cands, "table": table, "between_references": between,
        "registration_shift_px": shifts, "rankings": rankings, "total_wall_s": time.perf_counter() - t_start,
    }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    from ptyfast.io.atomic import write_json

    write_json(a.json, out)
    print(f"wrote {a.json} ({out['total_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
