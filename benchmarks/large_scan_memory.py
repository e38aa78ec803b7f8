"""Peak host memory of ``ptyfast reconstruct`` versus the number of frames (the streaming claim).

Writes two simulated CXI scans of N and 10·N frames without ever holding them in memory (frames are computed
on demand while ``write_cxi`` streams them), then runs ``/usr/bin/time -v ptyfast reconstruct`` on each and
prints the maximum resident set size.

    python benchmarks/large_scan_memory.py --frames 2000 20000 --dir /tmp/ptyfast-mem [--precision fp32]

The object grows with the scan area (75 % overlap raster, 32 px step), so part of the memory is the stitched
object itself (complex64 + float32 weight map); the frames never are. Solving the per-patch phase offsets (the
default for the shipped model) needs every patch's lit box (63 kB per frame): their overlap products are taken
as they arrive and the patches wait in an unlinked temporary file in TMPDIR (``ptyfast.runtime.spilled_patches``),
so memory holds only the few rows still to be overlapped; ``--no-align-phase`` does without them.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ptyfast.io.cxi import write_cxi
from ptyfast.physics import default_probe, forward_intensity, random_object, raster_positions
from ptyfast.scan import Scan


class SimulatedFrames:
    """Lazy (N, H, W) intensities: slicing computes the frames with the forward model."""

    def __init__(self, obj, probe, positions, photons=1e6):
        self.obj, self.positions = obj, positions
        self.probe = probe * np.sqrt(photons / np.sum(np.abs(probe) ** 2))
        self.shape = (len(positions),) + probe.shape
        self.dtype = np.float32

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        if not isinstance(key, slice):
            raise TypeError("SimulatedFrames supports slices only")
        return forward_intensity(self.probe, self.obj, self.positions[key])


def make_scan(path: Path, frames: int) -> Path:
    probe = default_probe()
    side = int(np.ceil(np.sqrt(frames))) * 32 + 160
    obj = random_object((side, side), 0)
    pos = raster_positions(obj.shape, probe.shape, overlap=0.75)[:frames]
    lazy = SimulatedFrames(obj, probe, pos)
    return write_cxi(path, Scan(diffraction=lazy, positions=pos, probe=lazy.probe, meta={"source": path.name}),
                     chunk=256)


def peak_rss_kib(cmd: list[str]) -> tuple[int, float, str]:
    t = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(res.stderr[-2000:])
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1))
    return rss, time.perf_counter() - t, res.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ptyfast-mem"))
    ap.add_argument("--no-align-phase", action="store_true",
                    help="stream in constant memory: do not keep the patches to solve their phase offsets")
    ap.add_argument("--precision", default="auto", help="reconstruct's --precision (auto: torch bf16 from 1,500 "
                    "frames on an AVX-512-BF16/AMX CPU, else ONNX Runtime fp32)")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    for n in args.frames:
        scan = args.dir / f"scan_{n}.cxi"
        if not scan.exists():
            t = time.perf_counter()
            make_scan(scan, n)
            print(f"wrote {scan} ({scan.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t:.0f} s")
        rss, wall, out = peak_rss_kib([sys.executable, "-m", "ptyfast", "reconstruct", str(scan), "-o",
                                       str(args.dir / f"recon_{n}.h5"), "--no-png", "--precision", args.precision]
                                      + (["--no-align-phase"] if args.no_align_phase else []))
        rate = re.search(r"(\d[\d,]*)\s+patterns/s", out)  # rich may wrap the line before "patterns/s"
        backend = re.search(r"backend: (\S+)", out)
        print(f"{n:>6} frames{' (no phase alignment)' if args.no_align_phase else ''}, "
              f"{backend.group(1) if backend else '?'} {args.precision}: peak RSS {rss / 1024:.0f} MiB, wall {wall:.0f} s, "
              f"{rate.group(1) if rate else '?'} patterns/s end to end")


if __name__ == "__main__":
    main()
