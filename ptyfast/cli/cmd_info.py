"""``ptyfast info``: what a scan file holds (frames, geometry, probe, positions, near/far field)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ptyfast.cli.app import AutoMask, Frames, command, console


def scan_summary(path: Path, frames: str | None = None, auto_mask: bool = True) -> list[tuple[str, str]]:
    """(field, value) rows describing the scan in ``path`` (any layout :func:`ptyfast.io.load_any` reads)."""
    from ptyfast.io import load_any

    scan = load_any(path, frames=frames, auto_mask=auto_mask)
    n, (h, w) = scan.n_frames, scan.frame_shape
    g = scan.geometry
    first = scan.frames(0, min(n, 64))
    lo, hi = scan.positions.min(axis=0), scan.positions.max(axis=0)
    defaulted = " (defaults: not in the file)" if scan.meta.get("geometry_defaulted") else ""
    rows = [
        ("file", f"{path} ({scan.meta.get('format', '?')})"),
        ("frames", f"{n} × {h}×{w} {np.dtype(scan.diffraction.dtype).name}"),
        ("counts / frame", f"mean {first.sum(axis=(1, 2)).mean():.4g}, max pixel {first.max():.4g} "
                           f"(first {len(first)} frames)"),
        ("wavelength", f"{g.wavelength:.4g} m ({g.energy / 1.602176634e-16:.4g} keV){defaulted}"),
        ("detector", f"distance {g.distance:.4g} m, pixel {g.pixel_size:.4g} m"),
        ("object pixel", "unknown (the file gives no geometry)" if defaulted else
         f"{g.object_pixel_size(h):.4g} m (λz/(Np), far-field)"),
        ("probe", (_probe_line(scan.probe) if scan.probe is not None else "absent")
         + (f"; {scan.meta['probe_modes_note']}" if scan.meta.get("probe_modes_note") else "")),
        ("mask", _mask_line(scan)),
        ("positions", f"y {lo[0]:.1f}…{hi[0]:.1f}, x {lo[1]:.1f}…{hi[1]:.1f} px; object {scan.object_shape}"),
        ("overlap", f"≈ {scan.overlap_estimate():.0%} (linear, median nearest-neighbour step)"),
        ("field", ("NEAR-field: " if scan.near_field else "") + str(scan.meta.get("near_field_reason", "far-field"))),
        ("ground truth", "yes" if scan.truth is not None else "no"),
    ]
    return rows


def _mask_line(scan) -> str:
    """Bad pixels: how many the file marks and how many ptyfast found (and why)."""
    h, w = scan.frame_shape
    found = scan.meta.get("auto_mask") or {}
    total = int((~scan.mask).sum()) if scan.mask is not None else 0
    auto = int(found.get("masked", 0))
    why = ", ".join(f"{n} {reason}" for reason, n in found.get("reasons", {}).items())
    if not total:
        return "none (no mask in the file, no bad pixels found)" if found else "absent"
    return (f"{total} bad of {h * w} pixels: {total - auto} from the file" + (f", {auto} found ({why})" if auto else ""))


def _probe_line(probe) -> str:
    """Shape, photons, and whether one pattern oversamples its exit wave (what a network needs)."""
    from ptyfast.physics.probe import energy_radius, oversampling_problem

    h, w = probe.shape
    problem = oversampling_problem(probe)
    return (f"{h}×{w}, Σ|P|² = {float(np.sum(np.abs(probe) ** 2)):.4g} photons, 90 % of its energy within "
            f"{energy_radius(probe):.0f} px" + (f" — {problem}" if problem else " (confined: patterns oversampled)"))


@command("info")
def info(file: Annotated[Path, typer.Argument(metavar="SCAN", help="Scan file (CXI/HDF5, Tike npz, PtyNet npz/dir).")],
         frames: Frames = None, auto_mask: AutoMask = True) -> None:
    """Describe a scan file."""
    from rich.table import Table

    table = Table(title=str(file.name), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for k, v in scan_summary(file, frames, auto_mask):
        table.add_row(k, v)
    console.print(table)
