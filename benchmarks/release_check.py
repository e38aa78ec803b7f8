"""Release check of a model (default: the shipped ptynet-s) on held-out images; see ptyfast.evaluation.release.

    python benchmarks/release_check.py -o benchmarks/results/release            # shipped model
    python benchmarks/release_check.py --model runs/s1/best.pt --pairs 2        # a training run

Held-out images: the last 10 % of the sorted cat faces (cat_face_angle90–99, the training runs' validation
split, never trained on), paired (90, 91), (92, 93), … as amplitude and phase. Without ../shared/data the
bundled demo pair (angle95 / angle97) is used. Writes release.json and the pictures of the first scan.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from ptyfast.evaluation.release import ReleaseOptions, release_check
from ptyfast.io.atomic import write_json
from ptyfast.io.images import read_image
from ptyfast.training.data import list_images

from _star import SHARED_DATA as SHARED  # ../shared/data or $PTYFAST_SHARED_DATA, in one place


def held_out_pairs(n: int):
    faces = SHARED / "ptynet-cat-faces" / "cat_face"
    if faces.is_dir():
        files = list_images([faces])
        held = files[len(files) - round(0.1 * len(files)):]
        return [(read_image(held[2 * k]), read_image(held[2 * k + 1])) for k in range(min(n, len(held) // 2))]
    data = resources.files("ptyfast.data")
    with resources.as_file(data / "demo_amplitude.png") as a, resources.as_file(data / "demo_phase.png") as p:
        return [(read_image(a), read_image(p))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/release"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--size", type=int, default=ReleaseOptions.size)
    ap.add_argument("--photons", type=float, default=ReleaseOptions.photons)
    ap.add_argument("--no-noise", action="store_true")
    ap.add_argument("--no-rpie", action="store_true", help="stitched figures only (no Figure 9 rPIE comparison)")
    args = ap.parse_args()
    opts = ReleaseOptions(size=args.size, photons=args.photons, noise=not args.no_noise, rpie=not args.no_rpie)
    res = release_check(args.model, held_out_pairs(args.pairs), opts, backend=args.backend, figure_dir=args.output)
    write_json(args.output / "release.json", res)
    print(f"{len(res['scans'])} held-out scans, {res['scans'][0]['frames']} frames each, backend: {res['backend']}")
    for name, m in res["mean"].items():
        print(f"{name:34s} phase PSNR {m['phase_psnr']:6.2f} dB  SSIM {m['phase_ssim']:.3f}   "
              f"amplitude PSNR {m['amplitude_psnr']:6.2f} dB  SSIM {m['amplitude_ssim']:.3f}")
    s = res["summary"]
    print(f"gain over flat: phase {s['phase_psnr_gain_over_flat_db']:+.2f} dB, amplitude "
          f"{s['amplitude_psnr_gain_over_flat_db']:+.2f} dB; phase-offset solving {s['alignment_gain_phase_db']:+.2f} dB"
          + (f"; phase with the offsets fitted to the data (--fit-offsets) {s['phase_psnr_gain_over_flat_db_offsets_fitted']:+.2f} dB"
             if s["phase_psnr_gain_over_flat_db_offsets_fitted"] is not None else ""))
    if args.no_rpie:
        print("rPIE comparison (Figure 9) not run (--no-rpie); passes: not checked")
        return
    print(f"rPIE iterations from the network to reach a flat start's error after 100 — object error against the "
          f"truth (Figure 9): {s['rpie_network_iterations_to_flat_100_object_error']}; data error: noise-free "
          f"{s['rpie_network_iterations_to_flat_100']}, noisy {s['rpie_network_iterations_to_flat_100_noisy']}; "
          f"passes: {s['passes']} (with --fit-offsets: {s['passes_with_fit_offsets']})")

if __name__ == "__main__":
    main()
