"""``ptyfast convert``: any supported scan layout → spec CXI (streamed, validated, atomic)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ptyfast.cli.app import OUTPUT, AutoMask, OutPath, choices, command, console, note_auto_mask
from ptyfast.choices import Compression


@command("convert")
def convert(
    source: Annotated[Path, typer.Argument(metavar="SCAN",
                                           help="Input: CXI/HDF5, Tike .npz(.bz2), PtyNet .npz or directory.")],
    output: OutPath = Path("scan.cxi"),
    compression: Annotated[str, typer.Option(metavar=choices(Compression), rich_help_panel=OUTPUT,
                                             help="Frame compression (bitshuffle-lz4: Eiger's).")] = "none",
    auto_mask: AutoMask = True,
) -> None:
    """Convert a scan to CXI."""
    from ptyfast.io import check_writable, load_any, write_cxi

    from ptyfast.io.cxi import compression_filter

    check_writable(output)  # refuses an output that is the source (or a link to it)
    compression_filter(compression)  # a bad name fails before any work
    scan = load_any(source, auto_mask=auto_mask)
    note_auto_mask(scan)  # the pixels found are written as the CXI mask
    write_cxi(output, scan, compression=compression)
    field = "near-field" if scan.near_field else "far-field"
    console.print(f"wrote {output}: {scan.n_frames} frames {scan.frame_shape[0]}×{scan.frame_shape[1]}, {field}")
