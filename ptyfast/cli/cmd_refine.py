"""``ptyfast refine``: ePIE / rPIE refinement of a scan from a flat, random or reconstructed initial object."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.markup import escape

from ptyfast.cli.app import (OUTPUT, PROBE, REFINEMENT, AutoMask, Frames, OutPath, choices, command, console,
                             console_err, note_auto_mask)
from ptyfast.choices import Algorithm, Batching, InitialObject


#: First iteration (0-based) with probe updates from this command. The library's ``refine()`` starts them at 0,
#: which is right for what calls it with a network's object (``reconstruct --refine``, the demo, the release
#: check); from a flat or random object (this command's default start) the object needs a couple of passes
#: before a probe update means anything, and docs/benchmarks.md ("Refinement's probe update") measured this
#: command with 2.
PROBE_START = 2


def _init_arg(init: str) -> dict:
    """'flat' / 'random', or the object (with its grid origin and probe, when stored) of an HDF5 output."""
    from ptyfast.refine.output import read_init

    if init in InitialObject.values():
        return {"object": init, "origin": (0.0, 0.0), "probe": None}
    return read_init(Path(init))


@command("refine")
def refine_cmd(
    scan_path: Annotated[Path, typer.Argument(metavar="SCAN", help="Scan file (CXI/HDF5, Tike npz, PtyNet npz/dir).")],
    init: Annotated[str, typer.Option(
        "--init", metavar=choices(InitialObject, other="PATH"), rich_help_panel=REFINEMENT,
        help="Initial object: flat, random, or an HDF5 output holding 'object' (e.g. of `ptyfast reconstruct`; its "
             "grid origin and probe too, when stored).")] = "flat",
    algorithm: Annotated[str, typer.Option("--algorithm", "-a", metavar=choices(Algorithm), rich_help_panel=REFINEMENT,
                                           help="Engine.")] = "rpie",
    iterations: Annotated[int, typer.Option("--iterations", "-n", rich_help_panel=REFINEMENT,
                                            help="Passes over all positions (≥ 1).")] = 50,
    batch: Annotated[Optional[int], typer.Option("--batch", rich_help_panel=REFINEMENT,
                                                 help="Mini-batch size; omit for the sequential textbook "
                                                      "algorithm (with --batching disjoint: the largest batch).")
                 ] = None,
    batching: Annotated[str, typer.Option(
        "--batching", metavar=choices(Batching), rich_help_panel=REFINEMENT,
        help="random: batches cut from a fresh random order; disjoint: batches of windows that do not overlap on the "
             "probe, updated together exactly as one after another (the sequential algorithm's progress per "
             "pass, batched: faster, most of all on a GPU).")] = "random",
    alpha: Annotated[Optional[float], typer.Option("--alpha", rich_help_panel=REFINEMENT,
                                                   help="Object α (rPIE weight / ePIE step).")] = None,
    beta: Annotated[Optional[float], typer.Option("--beta", rich_help_panel=REFINEMENT,
                                                  help="Probe β (rPIE weight / ePIE step).")] = None,
    probe_update: Annotated[bool, typer.Option("--probe-update/--no-probe-update", rich_help_panel=PROBE,
                                               help="Refine the probe too.")] = True,
    probe_start: Annotated[int, typer.Option("--probe-start", rich_help_panel=PROBE,
                                             help="First iteration (0-based) with probe updates (from a flat or random "
                                                  "start the object needs a couple of passes first).")] = PROBE_START,
    probe_modes: Annotated[Optional[int], typer.Option(
        "--probe-modes", min=1, rich_help_panel=PROBE,
        help="Incoherent probe modes to refine (a mixed-state, partially coherent probe); default: as many as the file "
             "holds (1 for most).")] = None,
    output: OutPath = Path("refined.h5"),
    png: Annotated[bool, typer.Option("--png/--no-png", rich_help_panel=OUTPUT,
                                      help="Also write amplitude/phase/probe/error PNGs.")] = True,
    seed: Annotated[int, typer.Option("--seed", rich_help_panel=REFINEMENT,
                                      help="Random seed (random start, position order).")] = 0,
    frames: Frames = None,
    auto_mask: AutoMask = True,
) -> None:
    """Refine a scan with ePIE or rPIE; writes the object, probe and error curve (HDF5 + PNG).

    A probe update is kept only when a 10-iteration trial shows it lowers the data error against holding
    the probe; the run says which it kept.
    """
    # options are validated by ptyfast.refine.refine (InputError → one line, exit 2), not by Typer, so every
    # bad value reads the same way
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ptyfast.io import check_writable, load_any
    from ptyfast.io.atomic import output_transaction
    from ptyfast.refine import refine
    from ptyfast.refine.output import result_weight, save_pngs, write_refine_h5

    check_writable(output)
    start = _init_arg(init)
    scan = load_any(scan_path, frames=frames, auto_mask=auto_mask)
    note_auto_mask(scan)
    if scan.near_field:
        from ptyfast.errors import InputError

        raise InputError(f"{scan_path} holds near-field data; ePIE/rPIE here use the far-field model only.")
    given = start["probe"] if start["probe"] is not None else scan.meta.get("probe_modes", scan.probe)
    modes = probe_modes if probe_modes is not None else (None if np.ndim(given) < 3 else len(given))
    if modes is not None and np.ndim(given) == 3 and start["probe"] is None:
        start["probe"] = given  # every mode the file holds
    if modes and modes > 1:
        console.print(f"  probe: {modes} incoherent modes refined (mixed state)")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("error {task.fields[err]}"), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task(algorithm, total=iterations, err="–")
        result = refine(
            scan, init=start["object"], algorithm=algorithm,
            positions=scan.positions - np.asarray(start["origin"]), probe=start["probe"], iterations=iterations, alpha=alpha, beta=beta,
            batch=batch, batching=batching, update_probe=probe_update, probe_start=probe_start, seed=seed,
            probe_modes=modes,
            progress=lambda i, n, e: bar.update(task, completed=i, err=f"{e:.4g}"),
        )
    provenance = {"source": str(scan_path), "init": init, "frame_selection": frames or "all",
                  "object_pixel_size_m": scan.object_pixel_size(),
                  "detector_mask": {"given": scan.mask is not None, **(scan.meta.get("auto_mask") or {})}}
    weight = result_weight(result)  # computed once for the HDF5 and the PNGs
    with output_transaction():  # the HDF5 and its PNGs appear together or not at all
        write_refine_h5(output, result, provenance=provenance, origin=start["origin"], weight=weight, mask=scan.mask)
        files = [output] + (save_pngs(result, output.with_suffix(""), weight=weight,
                                                  pixel_size_m=provenance["object_pixel_size_m"]) if png else [])
    if result.iterations:
        console.print(f"{result.algorithm}: {result.iterations} iterations, error {result.errors[0]:.4g} → "
                      f"{result.errors[-1]:.4g}, {result.seconds_per_iteration:.3g} s/iteration")
    if "probe_trial" in result.meta:
        t = result.meta["probe_trial"]
        console.print(f"  probe {t['kept']}: over the {t['iterations']}-iteration trial from iteration "
                      f"{t['from_iteration'] + 1}, updating it ended at data error {t['error_updated']:.4g}, "
                      f"holding it at {t['error_held']:.4g}")
    if "probe_updates_stopped" in result.meta and not result.diverged:
        console.print(f"  {result.message}")
    for warning in result.warnings:
        console_err.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)
    console.print("wrote " + ", ".join(str(f) for f in files))
    if result.diverged:
        console_err.print(f"[bold red]error:[/] {result.message}", highlight=False)
        raise typer.Exit(1)
