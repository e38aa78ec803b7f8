"""rPIE's α/β on the real Siemens star, judged without a ground truth: half-set agreement.

    python benchmarks/refine_settings_star.py -o benchmarks/results/refine-settings-star --iterations 60

The scan is split into its even and its odd frames (two interleaved scans of the same area, each with half the
dose); each half is refined from a flat start with the same settings (`ptyfast refine --frames 0::2` and
`1::2`, defaults otherwise: probe updates with the trial), and the two results are compared with `ptyfast
evaluate A --reference B` on the pixels both cover (phase offset removed). Settings that reconstruct the
sample rather than its noise make the halves agree: the phase PSNR between them is the figure, beside each
half's final data error. Writes ``refine_settings_star.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETTINGS = [(0.05, 0.05), (0.1, 0.1), (0.25, 0.25), (0.5, 0.5), (0.1, 0.5), (0.5, 0.1), (1.0, 1.0)]


def ptyfast(*args) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "ptyfast", *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/refine-settings-star"))
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--scan", type=Path, default=SHARED / "tike-siemens-star" / "siemens-star-small.npz.bz2")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ptyfast("convert", args.scan, "-o", d / "star.cxi")
        for alpha, beta in SETTINGS:
            errors = []
            for k, frames in enumerate(("0::2", "1::2")):
                ptyfast("refine", d / "star.cxi", "--frames", frames, "-n", args.iterations, "--alpha", alpha,
                        "--beta", beta, "-o", d / f"half{k}.h5", "--no-png")
                import h5py

                with h5py.File(d / f"half{k}.h5", "r") as f:
                    errors.append(float(f["errors"][-1]))
            ptyfast("evaluate", d / "half0.h5", "--reference", d / "half1.h5", "--json", d / "q.json")
            q = json.loads((d / "q.json").read_text())["reconstruction"]
            row = {"alpha": alpha, "beta": beta, "halves_phase_psnr": q["phase_psnr"],
                   "halves_amplitude_psnr": q["amplitude_psnr"], "halves_phase_ssim": q["phase_ssim"],
                   "final_errors": errors}
            rows.append(row)
            print(f"α {alpha:<5} β {beta:<5} halves agree: phase {q['phase_psnr']:.2f} dB (SSIM {q['phase_ssim']:.3f}), "
                  f"amplitude {q['amplitude_psnr']:.2f} dB; final errors {errors[0]:.4g} / {errors[1]:.4g}", flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "refine_settings_star.json").write_text(json.dumps(
        {"iterations": args.iterations, "scan": str(args.scan.name), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
