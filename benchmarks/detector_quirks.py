"""What real detectors put in their frames, and what `ptyfast reconstruct` makes of it.

    python benchmarks/detector_quirks.py -o benchmarks/results/detector-quirks          # 2 held-out pairs, 352²

For each held-out cat-face pair (the release check's protocol: 75 % raster, ±1 px jitter, 10⁶ photons per
frame, Poisson noise, the bundled probe) one clean scan and the same scan as a detector would record it:
0.05 % of pixels pinned at 2³²−1 in uint32 frames (with and without the detector's own mask, and with the
automatic masking turned off), a beam stop of radius 3, 6 and 10 px, counts saturating at 95 %, 80 % and 50 %
of the clean scan's brightest pixel. Each file goes through the real CLI (`reconstruct`, then `evaluate
--truth`); the table gives phase and amplitude PSNR, their change from the clean scan, ε, the pixels masked,
and the exit status. Writes ``detector_quirks.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ptyfast.evaluation.release import ReleaseOptions
from ptyfast.io.atomic import write_json
from ptyfast.io.cxi import write_cxi
from ptyfast.physics import default_probe, raster_positions
from ptyfast.physics.objects import object_from_images
from ptyfast.physics.simulate import detector_counts, simulate_scan

from release_check import held_out_pairs

CASES = {
    "clean": {},
    "pinned 0.05 % (uint32)": dict(pinned=5e-4, dtype="uint32"),
    "pinned, detector mask given": dict(pinned=5e-4, dtype="uint32", mask_given=True),
    "pinned, --no-auto-mask": dict(pinned=5e-4, dtype="uint32", flags=["--no-auto-mask"]),
    "beam stop r = 3 px": dict(beamstop=3),
    "beam stop r = 6 px": dict(beamstop=6),
    "beam stop r = 10 px": dict(beamstop=10),
    "saturation at 95 % of the peak": dict(saturation=0.95),
    "saturation at 80 % of the peak": dict(saturation=0.8),
    "saturation at 65 % of the peak": dict(saturation=0.65),
    "saturation at 50 % of the peak": dict(saturation=0.5),
}


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptyfast", *cmd], capture_output=True, text=True)


def one(folder: Path, scan, name: str, case: dict) -> dict:
    spec = dict(case)
    flags = spec.pop("flags", [])
    mask_given = spec.pop("mask_given", False)
    if "saturation" in spec:
        spec["saturation"] = spec["saturation"] * float(np.max(scan.diffraction))
    counts, done = detector_counts(scan.diffraction, rng=1, **spec) if spec else (scan.diffraction, {})
    mask = None
    if mask_given:
        top = np.iinfo(counts.dtype).max
        mask = ~(counts == top).any(axis=0)
    path = folder / f"{name}.cxi"
    write_cxi(path, scan.with_(diffraction=counts, mask=mask))
    out = folder / f"{name}.h5"
    rec = run(["reconstruct", str(path), "-o", str(out), "--no-png", *flags])
    row = {"exit": rec.returncode, "detector": done, "stderr": rec.stderr.strip().splitlines()[-1:] or [""]}
    if rec.returncode == 0:
        ev = folder / f"{name}.json"
        run(["evaluate", str(out), "--truth", str(path), "--json", str(ev)])
        scores = json.loads(ev.read_text())
        import h5py

        with h5py.File(out, "r") as f:
            prov = json.loads(f.attrs["provenance"])
            eps = float(f["consistency"].attrs["error"])
        row.update(phase_psnr=scores["reconstruction"]["phase_psnr"],
                   amplitude_psnr=scores["reconstruction"]["amplitude_psnr"],
                   flat_phase_psnr=scores["flat"]["phase_psnr"], flat_amplitude_psnr=scores["flat"]["amplitude_psnr"],
                   epsilon=eps, masked=prov.get("detector_mask", {}).get("masked", 0),
                   saturated_share=prov.get("detector_mask", {}).get("saturated_share", 0.0),
                   warnings=prov.get("warnings", []))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/detector-quirks"))
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--size", type=int, default=ReleaseOptions.size)
    ap.add_argument("--only", default="", help="run only the cases whose name contains this text (and clean)")
    args = ap.parse_args()
    o = ReleaseOptions(size=args.size)
    probe = default_probe()
    table: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (amp, phase) in enumerate(held_out_pairs(args.pairs)):
            rng = np.random.default_rng(o.seed + k)
            obj = object_from_images(amp, phase, (o.size, o.size))
            positions = raster_positions(obj.shape, probe.shape, overlap=o.overlap, jitter=o.jitter, rng=rng)
            scan = simulate_scan(obj, probe, positions, photons=o.photons, noise=o.noise, rng=rng)
            for name, case in CASES.items():
                if args.only and name != "clean" and args.only not in name:
                    continue
                row = one(Path(tmp), scan, f"pair{k}-{len(table.get(name, []))}-{abs(hash(name)) % 10**6}", case)
                table.setdefault(name, []).append(row)
                clean = table["clean"][k]
                if "phase_psnr" in row and "phase_psnr" in clean:
                    row["phase_change_db"] = row["phase_psnr"] - clean["phase_psnr"]
                    row["amplitude_change_db"] = row["amplitude_psnr"] - clean["amplitude_psnr"]
                print(f"pair {k} {name:34s} exit {row['exit']}  "
                      + (f"phase {row['phase_psnr']:.2f} ({row.get('phase_change_db', 0):+.2f})  amplitude "
                         f"{row['amplitude_psnr']:.2f} ({row.get('amplitude_change_db', 0):+.2f})  ε {row['epsilon']:.4f}"
                         f"  masked {row['masked']} (saturated share {row['saturated_share']:.1%})" if "phase_psnr" in row else row["stderr"][0]), flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(args.output / "detector_quirks.json", {"protocol": o.__dict__, "pairs": args.pairs, "cases": table})


if __name__ == "__main__":
    main()
