"""The seed paper's experiments on its own protocol (Pan et al., iScience 2023): ``ptyfast paper``.

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

Modules: :mod:`~.protocol` (constants, the paper's numbers, settings, inputs), :mod:`~.budget` (budgeted training),
:mod:`~.experiments` (the tables and Figure 9), :mod:`~.figures` (PNGs), :mod:`~.report` (markdown); this module
runs them in order.
"""


from __future__ import annotations

import platform
import time
from dataclasses import asdict
from pathlib import Path

from ptyfast.errors import InputError
from ptyfast.io.atomic import write_json, write_text
from ptyfast.evaluation.paper.budget import resolve_models, train_model
from ptyfast.evaluation.paper.experiments import figure9, table1, table2, table3
from ptyfast.evaluation.paper.figures import figure_convergence, figure_frc, figure_reconstructions, figure_table3
from ptyfast.evaluation.paper.protocol import PaperConfig, training_files, split_images, test_objects
from ptyfast.evaluation.paper.report import render_report

__all__ = ["PaperConfig", "run_paper_protocol", "split_images", "train_model", "render_report"]




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
    if out.exists() and out.resolve() == Path(images).resolve():
        raise InputError(f"report folder {out} is the image folder; give the report its own folder with -o.")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise InputError(f"cannot create {out}: directory {out.parent} does not exist; create it first.")
    (out / "figures").mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    log(f"paper protocol: {len(test)} held-out and {len(train_files)} training images; {split_note}")
    files = training_files(Path(images), test, train_files)
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
        t2, keep = table2(models, objects, overlaps, cfg, log)
        results["table2"] = t2
        figs += figure_reconstructions(out, keep, cfg)
        figs += figure_frc(out, keep)
    if "table1" in cfg.experiments:
        results["table1"] = table1(models, results["table2"], log)
    if "table3" in cfg.experiments:
        t3, panels = table3(models[cfg.finetune_model], test, cfg, log)
        results["table3"] = t3
        figs += figure_table3(out, panels, cfg)
    if "figure9" in cfg.experiments:
        f9 = figure9(models["ptynet-s"] if "ptynet-s" in models else next(iter(models.values())), objects[0][1],
                      cfg, log)
        results["figure9"] = f9
        figs += figure_convergence(out, f9)
    results["total_time_s"] = time.perf_counter() - t_start
    results["figures"] = [str(p.relative_to(out)) for p in figs]
    write_json(out / "results.json", results)
    report = out / "report.md"
    write_text(report, render_report(results))
    log(f"wrote {report} ({len(figs)} figures) in {results['total_time_s'] / 60:.1f} min")
    return report
