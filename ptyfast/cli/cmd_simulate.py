"""``ptyfast simulate``: a far-field scan of an object made from images (or a procedural object) → CXI."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from ptyfast.cli.app import DETECTOR, LIVE, PROBE, SIMULATION, OutPath, choices, command, console
from ptyfast.choices import DetectorDtype, ScanPath
from ptyfast.errors import InputError


@command("simulate")
def simulate(
    images: Annotated[Optional[list[Path]], typer.Argument(metavar="IMAGE",
                                                           help="Amplitude image [and phase image].")] = None,
    output: OutPath = Path("scan.cxi"),
    overlap: Annotated[float, typer.Option(metavar="FRACTION", rich_help_panel=SIMULATION,
                                           help="Linear overlap fraction (0.75 = 75 %: step 32 px on 128², every "
                                                "pixel lit by several windows of the confined default probe).")] = 0.75,
    path: Annotated[str, typer.Option("--path", metavar=choices(ScanPath), rich_help_panel=SIMULATION,
                                      help="Scan path.")] = "raster",
    photons: Annotated[Optional[float], typer.Option(rich_help_panel=SIMULATION,
                                                     help="Photons per frame, sum|P|² (default: keep the probe's own, "
                                                          "1000 for the bundled probe).")] = None,
    noise: Annotated[bool, typer.Option("--noise/--no-noise", rich_help_panel=SIMULATION,
                                        help="Poisson photon noise.")] = True,
    seed: Annotated[int, typer.Option("--seed", rich_help_panel=SIMULATION, help="Random seed.")] = 0,
    size: Annotated[int, typer.Option(metavar="PX", rich_help_panel=SIMULATION,
                                      help="Object side in pixels.")] = 600,
    jitter: Annotated[float, typer.Option(metavar="PX", rich_help_panel=SIMULATION,
                                          help="Uniform position jitter ±px per axis.")] = 2.0,
    probe: Annotated[Optional[Path], typer.Option(rich_help_panel=PROBE, help="Probe .npy/.cxi (default: the bundled "
                                                                             "confined 128² probe).")] = None,
    random_object: Annotated[bool, typer.Option("--random-object", rich_help_panel=SIMULATION,
                                                help="Procedural object, no images.")] = False,
    beamstop: Annotated[float, typer.Option(min=0.0, metavar="PX", rich_help_panel=DETECTOR,
                                            help="Beam stop: zero counts within this radius (detector pixels) of the "
                                                 "zero frequency.")] = 0.0,
    saturation: Annotated[Optional[float], typer.Option(min=1.0, metavar="COUNTS", rich_help_panel=DETECTOR,
                                                        help="Counts clip at this value (a saturating "
                                                             "counter).")] = None,
    pinned: Annotated[float, typer.Option(min=0.0, max=0.5, metavar="FRACTION", rich_help_panel=DETECTOR,
                                          help="Fraction of detector pixels stuck at the dtype's maximum in every "
                                               "frame (dead/hot pixel markers; 2³²−1 for float32).")] = 0.0,
    dtype: Annotated[str, typer.Option(metavar=choices(DetectorDtype), rich_help_panel=DETECTOR,
                                       help="Stored frame type (integers: detector counts, rounded).")] = "float32",
    stream: Annotated[Optional[float], typer.Option(
        min=0.001, metavar="FPS", rich_help_panel=LIVE,
        help="Write the scan live at this many frames/s (HDF5 SWMR, as a detector would), for "
             "reconstruct --follow.")] = None,
    stream_stop_after: Annotated[Optional[int], typer.Option(
        min=1, hidden=True, help="With --stream: stop after N frames without closing the file (a crashed "
                                 "writer, for tests).")] = None,
) -> None:
    """Simulate a far-field ptychography scan and write it as CXI (with ground truth)."""
    from ptyfast.io.atomic import check_writable
    from ptyfast.io.cxi import write_cxi
    from ptyfast.io.convert import load_probe
    from ptyfast.physics import default_probe, fermat_positions, raster_positions
    from ptyfast.physics.probe import default_geometry
    from ptyfast.physics.simulate import simulate_scan

    t0 = time.perf_counter()
    check_writable(output)
    if size < 2:
        raise InputError(f"--size must be at least 2 pixels; found {size}.")
    if photons is not None and not (np.isfinite(photons) and photons > 0):
        raise InputError(f"--photons must be a positive number; found {photons}.")
    path = ScanPath.check(path, "--path")
    rng = np.random.default_rng(seed)
    p = load_probe(probe) if probe is not None else default_probe()
    from ptyfast.io.images import build_object

    obj, how = build_object(list(images or []), size=size, random_object=random_object, rng=rng)
    make = raster_positions if path == ScanPath.RASTER else fermat_positions
    positions = make(obj.shape, p.shape, overlap=overlap, jitter=jitter, rng=rng)
    # the default probe's geometry is known; a probe file carries no pixel size, so none is claimed
    geometry = None if probe is not None else default_geometry()
    scan = simulate_scan(obj, p, positions, photons=photons, noise=noise, rng=rng, geometry=geometry, meta=dict(
        object=how, path=path, overlap=overlap, jitter=jitter, seed=seed,
        probe=str(probe) if probe else "bundled confined default probe", geometry_defaulted=probe is not None))
    if beamstop or saturation is not None or pinned or dtype != "float32":
        from ptyfast.physics.simulate import detector_counts

        counts, done = detector_counts(scan.diffraction, beamstop=beamstop, saturation=saturation, pinned=pinned,
                                       dtype=dtype, rng=rng)
        scan = scan.with_(diffraction=counts, meta={**scan.meta, "detector": {"dtype": dtype, **done}})
    if stream is not None:
        from ptyfast.io.live import stream_cxi

        console.print(f"streaming {scan.n_frames} frames to {output} at {stream:g} frames/s (SWMR)")
        stream_cxi(output, scan, stream, stop_after=stream_stop_after)
    else:
        write_cxi(output, scan)
    dt = time.perf_counter() - t0
    console.print(f"wrote {output}: {scan.n_frames} frames {scan.frame_shape[0]}×{scan.frame_shape[1]}, "
                  f"{path} {overlap:.0%} overlap, object {size}² ({how}) in {dt:.1f} s")
