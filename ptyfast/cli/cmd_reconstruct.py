"""``ptyfast reconstruct``: CXI/HDF5 in → stitched object (HDF5) + PNG previews + consistency figure out."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.markup import escape

from ptyfast.cli.app import (CHECKS, LIVE, MODEL, OUTPUT, PERFORMANCE, PROBE, REFINEMENT, STITCHING, AutoMask, Frames,
                             Threads, choices, command, console, console_err)
from ptyfast.choices import Algorithm, Backend, Device, Fit, Handoff, Precision, Weighting


def progress_bar():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console_err, transient=True)


def _estimated_probe(scans: list[Path], frames, auto_mask: bool, stack: contextlib.ExitStack, clashes) -> Path:
    """``--estimate-probe``: the probe refined on the scan's central frames, in a temporary .npy that lives as
    long as ``stack``."""
    import tempfile

    from ptyfast.errors import InputError
    from ptyfast.io import load_any
    from ptyfast.refine.probe_estimate import estimate_probe

    used = [name for name, value in clashes if value]
    if used:
        raise InputError(f"--estimate-probe refines the probe of one scan read here; it cannot be combined with "
                         f"{' or '.join(used)}.")
    scan = load_any(scans[0], frames=frames, auto_mask=auto_mask)
    try:
        if scan.near_field:
            raise InputError(f"{scans[0]} holds near-field data; the probe estimate uses the far-field model only.")
        with console.status("estimating the probe (rPIE on the central frames)"):
            est = estimate_probe(scan)
    finally:
        scan.close()
    console.print(f"  {est.describe()}")
    path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ptyfast-probe-"))) / "estimated-probe.npy"
    np.save(path, est.probe)
    return path


def output_for(scan_path: Path, output: Optional[Path], many: bool) -> Path:
    if output is None:
        return Path.cwd() / f"{scan_path.name.split('.')[0]}_recon.h5"
    if many or output.is_dir():
        return output / f"{scan_path.name.split('.')[0]}_recon.h5"
    return output


# The options of `ptyfast reconstruct`, in the order --help lists them within each panel.
ScansArg = Annotated[list[Path], typer.Argument(metavar="SCAN", help="CXI/HDF5 scans (or Tike .npz / PtyNet layouts).")]
OutputOpt = Annotated[Optional[Path], typer.Option("-o", "--output", rich_help_panel=OUTPUT,
                                                   help="Output .h5 (a folder when several scans).")]
ModelOpt = Annotated[Optional[str], typer.Option(
    metavar="MODEL", rich_help_panel=MODEL,
    help="Shipped model name or .pt/.onnx/.engine file (default: ptynet-s for scans under the bundled probe, "
         "the probe-conditioned ptynet-s-probe-est for any other probe).")]
BackendOpt = Annotated[str, typer.Option(metavar=choices(Backend), rich_help_panel=PERFORMANCE,
                                         help="Inference library (auto: the fastest available here).")]
DeviceOpt = Annotated[str, typer.Option(metavar=choices(Device), rich_help_panel=PERFORMANCE,
                                        help="Where inference runs (auto: a CUDA GPU when there is one).")]
PrecisionOpt = Annotated[str, typer.Option(metavar=choices(Precision, extra=("auto",)), rich_help_panel=PERFORMANCE,
                                           help="Inference precision; auto: torch bf16 for a scan of 1,500 frames or "
                                                "more on a CPU with AVX-512 BF16 or AMX when its outputs agree with "
                                                "fp32, else fp32.")]
BatchOpt = Annotated[Optional[int], typer.Option(min=1, rich_help_panel=PERFORMANCE,
                                                 help="Inference batch size (default: 32 on the CPU, where larger "
                                                      "batches only cost memory; 128 on a GPU).")]
ChunkOpt = Annotated[Optional[int], typer.Option(min=1, rich_help_panel=PERFORMANCE,
                                                 help="Frames read from disk per chunk.")]
FitOpt = Annotated[str, typer.Option(metavar=choices(Fit), rich_help_panel=MODEL,
                                     help="Adapt frames of another size to the model input.")]
WeightingOpt = Annotated[str, typer.Option(metavar=choices(Weighting), rich_help_panel=STITCHING,
                                           help="Stitching weights: probe (|P|², sub-pixel) or uniform (the paper's "
                                                "plain average).")]
AlignPhaseOpt = Annotated[Optional[bool], typer.Option(
    "--align-phase/--no-align-phase", rich_help_panel=STITCHING,
    help="Solve per-patch phase offsets from the overlaps before blending (default: when the model's "
         "manifest says its outputs carry free offsets).")]
FitOffsetsOpt = Annotated[bool, typer.Option(
    "--fit-offsets", rich_help_panel=STITCHING,
    help="Refine the solved phase offsets against the measured patterns (the blend's phase only; ≈ 15 ms per "
         "frame on 2 cores and ≈ 130 kB of memory per 128² frame; +2.3 dB phase on the release scans).")]
ConsistencyOpt = Annotated[bool, typer.Option(rich_help_panel=CHECKS, help="Forward-model data-consistency figure ε.")]
ConsistencyFramesOpt = Annotated[Optional[int], typer.Option(
    min=0, rich_help_panel=CHECKS,
    help="Frames ε is computed on: an evenly spaced sample of at most this many, kept from the one read of the "
         "file; 0 = every frame (per-frame errors for all, the file read a second time).")]
ProbeOpt = Annotated[Optional[Path], typer.Option(
    rich_help_panel=PROBE, help="Probe to use instead of the scan's: an .npy (complex H×W) or a ptyfast output "
                                "holding one (e.g. `ptyfast refine` of part of this scan).")]
EstimateProbeOpt = Annotated[bool, typer.Option(
    "--estimate-probe", rich_help_panel=PROBE,
    help="The file holds only a guessed probe: refine it first (30 rPIE iterations, object and probe, on the 256 "
         "frames nearest the scan's centre; kept only if it lowers the data error), then reconstruct with it. "
         "One scan at a time; the probe is stored in the output.")]
AllowProbeMismatchOpt = Annotated[bool, typer.Option(
    rich_help_panel=CHECKS, help="Run even if the probe is outside the model's probe family (or differs from a "
                                 "single-probe model's).")]
RefineOpt = Annotated[Optional[str], typer.Option(
    metavar=choices(Algorithm), rich_help_panel=REFINEMENT,
    help="Refine the network's result with this engine (what `ptyfast refine --algorithm` runs).")]
IterationsOpt = Annotated[int, typer.Option(min=1, rich_help_panel=REFINEMENT, help="Refinement iterations.")]
PngOpt = Annotated[bool, typer.Option("--png/--no-png", rich_help_panel=OUTPUT, help="Write PNG previews.")]
SchedulerOpt = Annotated[Optional[str], typer.Option(
    metavar="local:N|ADDRESS", rich_help_panel=PERFORMANCE,
    help="Run on Dask: local:N starts N worker processes here, or a scheduler address (tcp://host:8786). "
         "Several scans: one task per scan; one scan: its frames split across the workers.")]
FollowOpt = Annotated[bool, typer.Option(
    "--follow", rich_help_panel=LIVE,
    help="Follow a scan while it is written (HDF5 SWMR): reconstruct frames as they arrive, refresh the output, "
         "finish when the writer closes the file or marks it complete.")]
IdleTimeoutOpt = Annotated[float, typer.Option(min=0.1, metavar="SECONDS", rich_help_panel=LIVE,
                                               help="With --follow: finish when no frame has arrived for this long.")]
RefreshFramesOpt = Annotated[int, typer.Option(min=1, rich_help_panel=LIVE,
                                               help="With --follow: rewrite the output every N new frames...")]
RefreshSecondsOpt = Annotated[float, typer.Option(min=0.0, metavar="SECONDS", rich_help_panel=LIVE,
                                                  help="...or every so many seconds, whichever first.")]
StrictOpt = Annotated[bool, typer.Option(
    "--strict", rich_help_panel=CHECKS,
    help="Exit 1 (writing nothing) when the result cannot explain its data (data consistency ε above 0.5, or "
         "above 0.7 × a flat object's), instead of warning; for pipelines.")]
HandoffOpt = Annotated[Optional[tuple[str, Path]], typer.Option(
    metavar=f"{choices(Handoff)} DIR", rich_help_panel=OUTPUT,
    help="Also write the result as an iterative code's initial guess in DIR (ptychi: Pty-Chi 2.2 conventions "
         "and a script that starts its rPIE; several scans: one subfolder each).")]


# --chunk and --consistency-frames default to the reconstruct job's own defaults (the runtime's CHUNK and
# CONSISTENCY_FRAMES), read when the command parses its arguments: importing the runtime here would slow every
# command's start by a second.
@command("reconstruct", library_defaults={
    "chunk": "ptyfast.runtime.reconstruct:ReconstructJob.chunk",
    "consistency_frames": "ptyfast.runtime.reconstruct:ReconstructJob.consistency_frames"})
def reconstruct_cmd(
    scans: ScansArg,
    output: OutputOpt = None,
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    batch: BatchOpt = None,
    chunk: ChunkOpt = None,
    fit: FitOpt = "none",
    weighting: WeightingOpt = "probe",
    align_phase: AlignPhaseOpt = None,
    fit_offsets: FitOffsetsOpt = False,
    consistency: ConsistencyOpt = True,
    consistency_frames: ConsistencyFramesOpt = None,
    probe: ProbeOpt = None,
    estimate_probe: EstimateProbeOpt = False,
    allow_probe_mismatch: AllowProbeMismatchOpt = False,
    refine: RefineOpt = None,
    iterations: IterationsOpt = 50,
    png: PngOpt = True,
    threads: Threads = None,
    frames: Frames = None,
    scheduler: SchedulerOpt = None,
    follow: FollowOpt = False,
    idle_timeout: IdleTimeoutOpt = 60.0,
    refresh_frames: RefreshFramesOpt = 256,
    refresh_seconds: RefreshSecondsOpt = 10.0,
    auto_mask: AutoMask = True,
    strict: StrictOpt = False,
    handoff: HandoffOpt = None,
) -> None:
    """Reconstruct scans with a trained network: stream, infer, stitch, check consistency, write results."""
    from ptyfast.runtime.reconstruct import ReconstructJob

    from ptyfast import threads as thread_setting

    threads = threads or None  # 0 = the default, as in every command
    thread_setting.set_threads(threads)  # torch, ONNX Runtime, scipy.fft and BLAS alike
    if refine is not None:  # before any inference: a misspelt engine must not cost the whole network pass
        refine = Algorithm.check(refine, "--refine algorithm")
    many = len(scans) > 1
    outs = _outputs(scans, output, many, probe)
    with contextlib.ExitStack() as stack:  # the estimated probe's folder and the backend close on every path
        offset_fitter = _offset_fitter(align_phase) if fit_offsets else None
        _check_probe_and_handoff(probe, handoff)
        finish = Finisher(frames=frames, refine=refine, iterations=iterations, consistency=consistency, png=png,
                          handoff=None if handoff is None else (handoff[0], handoff[1], many), strict=strict)
        if follow:
            _check_follow((("several scans", many), ("--frames", frames), ("--scheduler", scheduler),
                           ("--refine", refine), ("--handoff", handoff), ("--fit-offsets", fit_offsets)))
        if estimate_probe:  # after every cheap check: a refused option must not cost the estimate first
            probe = _estimated_probe(scans, frames, auto_mask, stack,
                                     clashes=(("--probe", probe), ("several scans", many), ("--follow", follow),
                                              ("--scheduler", scheduler)))
        job = ReconstructJob(model=model, backend=backend, device=device, precision=precision, batch=batch,
                             chunk=chunk, fit=fit, weighting=weighting, align_phase=align_phase,
                             consistency=consistency, consistency_frames=consistency_frames,
                             allow_probe_mismatch=allow_probe_mismatch, threads=threads, offset_fitter=offset_fitter,
                             probe=str(probe.resolve()) if probe else None, auto_mask=auto_mask, strict=strict)
        be, reason = _open_backend(job, scans, frames, stack, model=model, backend=backend, device=device,
                                   precision=precision, threads=threads, follow=follow)
        _run(scans, outs, job, be, reason, finish, many=many, scheduler=scheduler, device=device, follow=follow,
             idle_timeout=idle_timeout, refresh_frames=refresh_frames, refresh_seconds=refresh_seconds)


def _outputs(scans: list[Path], output: Optional[Path], many: bool, probe: Optional[Path]) -> list[Path]:
    """The output of each scan, each refused before any work if it cannot be written or is one of the inputs."""
    from ptyfast.errors import InputError
    from ptyfast.io.atomic import check_writable

    if many and output is not None and not output.is_dir():
        raise InputError(f"with several scans, -o must be an existing folder; {output} is not one.")
    outs = [output_for(s, output, many) for s in scans]
    if probe is not None:
        from ptyfast.io.atomic import register_input

        register_input(probe)  # -o may not name the --probe file
    for o in outs:
        check_writable(o)  # also refuses an output that is one of the scans (or a link to one)
    return outs


def _offset_fitter(align_phase: Optional[bool]):
    """--fit-offsets: the function that refines the solved phase offsets (refused with --no-align-phase)."""
    from ptyfast.errors import InputError

    if align_phase is False:
        raise InputError("--fit-offsets refines the phase offsets solved from the overlaps; it cannot be "
                         "combined with --no-align-phase.")
    from ptyfast.runtime.offset_fit import fit_offsets as offset_fitter

    return offset_fitter


def _check_probe_and_handoff(probe: Optional[Path], handoff: Optional[tuple[str, Path]]) -> None:
    """Refuse an unreadable --probe file or an unusable --handoff before any model is opened."""
    from ptyfast.errors import InputError

    if probe is not None:
        from ptyfast.io.convert import load_probe

        load_probe(probe)  # a missing, unreadable or probe-less file is refused before any model is opened
    if handoff is not None:
        Handoff.check(handoff[0], "--handoff code")
        if handoff[1].exists() and not handoff[1].is_dir():
            raise InputError(f"--handoff {handoff[0]} {handoff[1]}: that is a file; give a folder.")


def _check_follow(uses) -> None:
    """--follow: refuse the options, named in ``uses`` as (name, value) pairs, that it cannot be combined with."""
    from ptyfast.errors import InputError

    clash = [name for name, used in uses if used]
    if clash:
        raise InputError(f"--follow reconstructs one scan as it is written; it cannot be combined with "
                         f"{' or '.join(clash)}.")


def _open_backend(job, scans: list[Path], frames, stack: contextlib.ExitStack, *, model, backend: str, device: str,
                  precision: str, threads, follow: bool):
    """The inference backend (closed with ``stack``) and the sentence saying why it was chosen; the model too
    when none was named (from the scans' probes)."""
    from ptyfast.runtime.backends import open_backend

    total = _frames_to_reconstruct(scans, frames) if precision.lower() == "auto" and not follow else None
    chosen = ""
    if model is None:
        from ptyfast.runtime.reconstruct import default_model_for, scan_probes

        model, chosen = default_model_for(scan_probes(scans, job.probe))
        job.model = model
    be, reason = open_backend(model, backend, device, precision, threads=threads, frames=total)
    reason = f"{chosen}; {reason}" if chosen else reason
    job.precision = be.precision  # what auto chose, for the provenance and for Dask workers
    console.print(f"backend: [bold]{reason}[/] ({be.manifest.architecture}, {be.precision})")
    stack.callback(be.close)
    return be, reason


def _run(scans: list[Path], outs: list[Path], job, be, reason: str, finish: "Finisher", *, many: bool,
         scheduler: Optional[str], device: str, follow: bool, idle_timeout: float, refresh_frames: int,
         refresh_seconds: float) -> None:
    """Reconstruct: following one growing scan, one Dask task per scan, or each scan in turn (its frames split
    across the Dask workers when there are some)."""
    client = cluster = None
    if scheduler is not None:
        from ptyfast.runtime.distributed import open_client

        client, cluster = open_client(scheduler, device)
        console.print(f"Dask: {len(client.scheduler_info()['workers'])} workers at {client.scheduler.address}")
    if follow:
        from ptyfast.runtime.live import FollowOptions

        _follow(scans[0], outs[0], job, be, reason, finish,
                FollowOptions(idle_timeout=idle_timeout, refresh_frames=refresh_frames,
                              refresh_seconds=refresh_seconds))
    elif client is not None and many:
        _many_on_cluster(client, scans, outs, job, finish)
    else:
        for scan_path, out in zip(scans, outs):
            _one(scan_path, out, job, be, reason, finish, client)
    if client is not None:
        from ptyfast.runtime.distributed import close_client

        close_client(client, cluster)


def _frames_to_reconstruct(scans: list[Path], frames) -> int | None:
    """The frames of all ``scans`` (with the --frames selection), for --precision auto; None when one is not an
    HDF5 file (npz layouts would be decompressed twice) or cannot be opened (its own error comes when it is
    reconstructed)."""
    import h5py

    from ptyfast.io.convert import load_any

    total = 0
    for path in scans:
        try:
            if not h5py.is_hdf5(path):
                return None
            with load_any(path, validate=False, frames=frames, auto_mask=False) as scan:
                total += scan.n_frames
        except Exception:  # noqa: BLE001 - reported with its own sentence when the scan itself is read
            return None
    return total


def _one(scan_path: Path, out: Path, job, be, reason: str, finish: "Finisher", client) -> None:
    """One scan in this process (or, with a Dask client, its frames split across the workers)."""
    from ptyfast.io.convert import load_any
    from ptyfast.runtime.reconstruct import run_reconstruct

    with load_any(scan_path, validate=False, frames=finish.frames, auto_mask=job.auto_mask) as scan:  # frames checked chunk by chunk
        with progress_bar() as bar:
            task = bar.add_task(scan_path.name, total=scan.n_frames, rate="")

            def on_progress(done, total, stage):
                bar.update(task, completed=done, description=f"{scan_path.name}: {stage}", rate="")

            rec, prov = run_reconstruct(scan, job, backend=be, reason=reason, progress=on_progress, client=client,
                                        source=(str(scan_path.resolve()), finish.frames))
        finish(scan, scan_path, out, rec, prov)


def _many_on_cluster(client, scans: list[Path], outs: list[Path], job, finish: "Finisher") -> None:
    """One Dask task per scan; each output is written (atomically) as its task completes."""
    from distributed import as_completed

    from ptyfast.io.convert import load_any
    from ptyfast.runtime.distributed import gather, submit_scans

    for p in scans:  # every scan opens (format, frames, near field) before any work is sent: one sentence, no output
        load_any(p, validate=False, frames=finish.frames, auto_mask=job.auto_mask).close()
    futures = submit_scans(client, [(str(p), finish.frames) for p in scans], job)
    index = {f.key: k for k, f in enumerate(futures)}
    with progress_bar() as bar:
        task = bar.add_task(f"{len(scans)} scans on the cluster", total=len(scans), rate="")
        for fut in as_completed(futures):
            k = index[fut.key]
            rec, prov = gather(client, fut, f"reconstructing {scans[k]}")
            bar.advance(task)
            scan = load_any(scans[k], validate=False, frames=finish.frames, auto_mask=job.auto_mask) if finish.needs_scan else None
            try:
                finish(scan, scans[k], outs[k], rec, prov)
            finally:
                if scan is not None:
                    scan.close()


def _follow(scan_path: Path, out: Path, job, be, reason: str, finish: "Finisher", options) -> None:
    """--follow: refresh ``out`` while the scan grows; the final write is the offline result's. Until it is
    written the refreshed files count as temporary: an error or a signal removes them (no partial output)."""
    from ptyfast.io.atomic import register_temporary, unregister_temporary
    from ptyfast.runtime.live import follow

    with progress_bar() as bar:
        task = bar.add_task(f"{scan_path.name}: following", total=None, rate="")

        def on_frames(n):
            bar.update(task, completed=n, rate=f"{n} frames")

        shown: set = set()  # refreshed outputs: removed again if the follow fails or is interrupted

        def on_refresh(rec, prov):
            prov["live"] = {"ended": "", "complete": False}
            for p in [out, *finish.write(out, rec, prov)]:
                if p not in shown:
                    register_temporary(p)
                    shown.add(p)

        res = follow(scan_path, job, be, reason, options, on_refresh=on_refresh, on_frames=on_frames)
    note = f"{scan_path.name}: {res.ended}"
    if res.complete:
        console.print(note)
    else:
        console_err.print(f"[bold yellow]warning:[/] {escape(note)}; the output holds the {res.rec.n_frames} frames "
                          "received (a complete, valid reconstruction of those).", highlight=False)
    finish(None, scan_path, out, res.rec, res.provenance)
    for p in shown:  # the final output is written: it stays
        unregister_temporary(p)


class Finisher:
    """What happens to a reconstruction after the network: optional refinement, the atomic write of the
    HDF5 and its previews, the summary lines."""

    def __init__(self, *, frames, refine, iterations, consistency, png, handoff=None, strict=False):
        self.frames, self.refine, self.iterations, self.strict = frames, refine, iterations, strict
        self.consistency, self.png, self.handoff = consistency, png, handoff

    @property
    def needs_scan(self) -> bool:
        return bool(self.refine or self.handoff)

    def write(self, out: Path, rec, prov, *, scan=None, scan_path: Path | None = None) -> list[Path]:
        """The HDF5, its previews and (with a scan) the hand-off, appearing together or not at all (each
        replaces the last atomically)."""
        from ptyfast.io.atomic import output_transaction
        from ptyfast.runtime.output import save_previews, write_reconstruction

        prov["frame_selection"] = self.frames or "all"
        with output_transaction():
            write_reconstruction(out, rec, prov)
            written = save_previews(rec, out.with_suffix(""), pixel_size_m=prov.get("object_pixel_size_m")) \
                if self.png else []
            if self.handoff is not None and scan is not None:
                from ptyfast.io.handoff import write_ptychi_handoff

                _, folder, many = self.handoff
                folder = folder / scan_path.name.split(".")[0] if many else folder
                written += write_ptychi_handoff(folder, scan, rec)
            return written

    def __call__(self, scan, scan_path: Path, out: Path, rec, prov) -> None:
        from ptyfast.runtime.reconstruct import check_explains_data

        if self.refine:
            rec, prov = _refine(scan, rec, prov, self.refine, self.iterations, consistency=self.consistency)
        check_explains_data(rec, prov, strict=self.strict, name=scan_path.name)
        previews = self.write(out, rec, prov, scan=scan, scan_path=scan_path)
        t = rec.timings
        rate = (f"followed for {t['wall']:.1f} s" if "live" in prov  # paced by the writer, not a throughput
                else f"{prov['patterns_per_s']:.0f} patterns/s end to end")
        console.print(
            f"{scan_path.name}: {rec.n_frames} frames → {out}  object {rec.object.shape[0]}×{rec.object.shape[1]}  "
            f"{rate} (read {t['read']:.2f} s, preprocess "
            f"{t['preprocess']:.2f} s, infer {t['infer']:.2f} s, stitch {t['stitch']:.2f} s"
            + (f", consistency {t['consistency']:.2f} s" if "consistency" in t else "")
            + (f"; {t['workers']} workers, {t['partitions']} partitions" if "workers" in t else "") + ")")
        if rec.consistency is not None:
            c = rec.consistency
            sample = "" if c.frames is None else f" on {len(c.frames)} evenly spaced frames of {rec.n_frames}"
            flat = "" if c.flat_error is None else f"; a flat object: {c.flat_error:.4f}"
            console.print(f"  data consistency ε = {c.error:.4f}{sample} (amplitude scale {c.scale:.3f}{flat}); "
                          f"worst frame {c.per_frame.max():.4f}")
        console.print(f"  probe: {prov['probe_source']}"
                      + (f"; {prov['probe_modes_note']}" if prov.get("probe_modes_note") else ""))
        if prov.get("auto_mask_note"):
            console.print(f"  pixels: {escape(prov['auto_mask_note'])}", highlight=False)
        for warning in prov.get("warnings", []):
            console_err.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)
        for p in previews:
            console.print(f"  wrote {p}")


def _refine(scan, rec, prov, algorithm, iterations, *, consistency: bool):
    """rPIE/ePIE from the network's object; the result's consistency figure is the refined object's own."""
    from ptyfast.refine import refine_reconstruction
    from ptyfast.runtime.reconstruct import Reconstruction
    from ptyfast.runtime.consistency import data_consistency

    with progress_bar() as bar:
        task = bar.add_task(f"{algorithm}", total=iterations, rate="")

        def on_it(it, total, err):
            bar.update(task, completed=it, rate=f"error {err:.4g}")

        res = refine_reconstruction(scan, rec.object, positions=rec.positions,
                                    probe=rec.probe, algorithm=algorithm, iterations=iterations, progress=on_it)
    console.print(f"  {algorithm}: {len(res.errors)} iterations, error {res.errors[0]:.4g} → {res.errors[-1]:.4g}"
                  + (f" ({res.message})" if res.message else ""))
    prov = {**prov, "refine": {"algorithm": algorithm, "iterations": len(res.errors),
                               "errors": [float(e) for e in res.errors], **res.options}}
    obj, probe = np.asarray(res.object), np.asarray(res.probe)
    checked = data_consistency(scan, obj, probe, rec.positions) if consistency else None
    if rec.consistency is not None:
        prov["refine"]["network_consistency"] = rec.consistency.error
    out = Reconstruction(object=obj, weight=rec.weight, positions=rec.positions,
                         origin=rec.origin, probe=probe, consistency=checked,
                         timings={**rec.timings, "refine": float(np.sum(res.timings))}, n_frames=rec.n_frames,
                         provenance=prov, mask=rec.mask)
    return out, prov

