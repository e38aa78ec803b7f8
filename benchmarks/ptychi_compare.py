"""ptyfast rPIE vs Pty-Chi rPIE on the Tike Siemens star, seconds per iteration, measured in one run.

Pty-Chi (PyPI ``ptychi``, PyTorch) is never a ptyfast dependency: it lives in its own venv, and this script
runs it there as a subprocess, on the same data, after (or before) timing ptyfast in-process::

    python -m venv /tmp/ptychi-venv && /tmp/ptychi-venv/bin/pip install torch==2.13.0 ptychi
    python benchmarks/ptychi_compare.py --iterations 10 --batch 32 [--probe-update] [--ptychi-python PATH]

Equal settings: the same frames (fftshifted Tike data; Pty-Chi gets them centred with ``fft_shift=True``),
the same probe (divided by √(H·W) for Pty-Chi, whose far field is the unnormalised FFT), the same positions,
flat initial object, rPIE with object α = 0.1 and probe β = 0.1, the same batch size (random batches) and
iterations, probe update on or off, float32/complex64, CPU, the same thread count (torch.set_num_threads and
scipy.fft workers both = all cores). Seconds per iteration = median over iterations after one warm-up
iteration for both. (Batched formulations differ slightly, see ptyfast.refine.engines; at batch 1 both are
the textbook rPIE.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _star import STAR, load_star  # noqa: E402

PTYCHI_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, torch
    args = json.loads(sys.argv[1])
    torch.set_num_threads(args["threads"])
    try:
        import torchvision.transforms  # noqa: F401
    except Exception:
        # The only torchvision wheels on this machine's index do not load against the CPU torch 2.13
        # ("operator torchvision::nms does not exist"). Pty-Chi imports torchvision only for GaussianBlur
        # (used for diffraction_pattern_blur_sigma, off here): stand in a module that has the name.
        import types
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        tv = types.ModuleType("torchvision"); tvt = types.ModuleType("torchvision.transforms")
        class GaussianBlur:
            def __init__(self, *a, **k):
                raise RuntimeError("torchvision unavailable: GaussianBlur is not used in this comparison")
        tvt.GaussianBlur = GaussianBlur; tv.transforms = tvt
        sys.modules["torchvision"] = tv; sys.modules["torchvision.transforms"] = tvt
    import ptychi.api as api
    from ptychi.api.task import PtychographyTask
    d = np.load(args["npz"])
    data = torch.tensor(d["data"])                    # (N, H, W) centred, photons
    probe = torch.tensor(d["probe"])[None, None]      # (1, 1, H, W), unnormalised-FFT scale
    pos = d["positions"]                              # (N, 2) y, x (object pixels)
    pos = pos - pos.mean(axis=0)                      # Pty-Chi: relative to the object centre
    h, w = probe.shape[-2:]
    size = (int(np.ceil(np.ptp(pos[:, 0]))) + h + 2, int(np.ceil(np.ptp(pos[:, 1]))) + w + 2)

    def options(epochs):
        o = api.RPIEOptions()
        o.data_options.data = data
        o.data_options.fft_shift = True
        o.object_options.initial_guess = torch.ones((1, *size), dtype=torch.complex64)
        o.object_options.pixel_size_m = 1e-8
        o.object_options.optimizable = True
        o.object_options.optimizer = api.Optimizers.SGD
        o.object_options.step_size = 1.0
        o.object_options.alpha = 0.1
        o.probe_options.initial_guess = probe
        o.probe_options.optimizable = args["probe_update"]
        o.probe_options.optimizer = api.Optimizers.SGD
        o.probe_options.step_size = 1.0
        o.probe_options.alpha = 0.1
        o.probe_position_options.position_y_px = torch.tensor(pos[:, 0])
        o.probe_position_options.position_x_px = torch.tensor(pos[:, 1])
        o.probe_position_options.optimizable = False
        o.reconstructor_options.batch_size = args["batch"]
        o.reconstructor_options.num_epochs = epochs
        o.reconstructor_options.default_device = api.Devices.CPU
        o.reconstructor_options.random_seed = 0
        return o

    task = PtychographyTask(options(args["iterations"] + 1))
    times = []
    for i in range(args["iterations"] + 1):
        t0 = time.perf_counter()
        task.run(1)
        times.append(time.perf_counter() - t0)
    loss = None
    try:
        loss = [float(x) for x in task.reconstructor.loss_tracker.table["loss"]]
    except Exception:
        pass
    print(json.dumps({"times": times[1:], "loss": loss, "torch": torch.__version__}))
    """
)


def run_ptyfast(scan, iterations: int, batch: int | None, probe_update: bool) -> dict:
    from ptyfast.refine import refine

    r = refine(scan, init="flat", algorithm="rpie", iterations=iterations + 1, batch=batch,
               alpha=0.1, beta=0.1, update_probe=probe_update, probe_start=0, seed=0)
    return {"times": r.timings[1:].tolist(), "errors": r.errors.tolist()}


def run_ptychi(python: str, scan, iterations: int, batch: int | None, probe_update: bool, tmp: Path) -> dict:
    h, w = scan.frame_shape
    npz = tmp / "star_for_ptychi.npz"
    np.savez(npz, data=scan.frames(0, scan.n_frames), positions=scan.positions,
             probe=(scan.probe / np.sqrt(h * w)).astype(np.complex64))
    args = dict(npz=str(npz), iterations=iterations, batch=batch or 1, probe_update=probe_update,
                threads=os.cpu_count() or 1)
    proc = subprocess.run([python, "-c", PTYCHI_SCRIPT, json.dumps(args)], capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"ptychi run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32, help="positions per mini-batch (1 = sequential)")
    ap.add_argument("--probe-update", action="store_true")
    ap.add_argument("--ptychi-python", default="/tmp/ptychi-venv/bin/python")
    ap.add_argument("--data", default=str(STAR))
    a = ap.parse_args(argv)
    scan = load_star(Path(a.data))
    batch = None if a.batch == 1 else a.batch
    print(f"Siemens star: {scan.n_frames} frames {scan.frame_shape}, rPIE, batch {a.batch}, "
          f"probe update {'on' if a.probe_update else 'off'}, {a.iterations} timed iterations, "
          f"{os.cpu_count()} CPU threads")
    ours = run_ptyfast(scan, a.iterations, batch, a.probe_update)
    t_ours = float(np.median(ours["times"]))
    print(f"ptyfast : {t_ours:.3f} s/iteration   (error {ours['errors'][0]:.4g} → {ours['errors'][-1]:.4g})")
    if not Path(a.ptychi_python).exists():
        print(f"ptychi  : not run — {a.ptychi_python} does not exist (install Pty-Chi in its own venv, see the "
              "docstring)")
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        theirs = run_ptychi(a.ptychi_python, scan, a.iterations, batch, a.probe_update, Path(tmp))
    t_theirs = float(np.median(theirs["times"]))
    loss = theirs.get("loss")
    lt = f"(loss {loss[0]:.4g} → {loss[-1]:.4g})" if loss else ""
    print(f"ptychi  : {t_theirs:.3f} s/iteration   {lt} torch {theirs['torch']}")
    print(f"speed-up: {t_theirs / t_ours:.2f}× (ptychi / ptyfast seconds per iteration)")


if __name__ == "__main__":
    main()
