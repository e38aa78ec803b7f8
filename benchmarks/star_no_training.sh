#!/usr/bin/env bash
# A real scan with no training on it: the Tike Siemens star, whose file holds only a guessed probe.
#   1. a short rPIE of the upper half for the probe:      ptyfast refine star.cxi --frames 0:258 -n 30
#   2. the probe-conditioned network with that probe:     ptyfast reconstruct star.cxi --probe probe_top30.h5
# scored over the whole scan against an rPIE reconstruction of the whole scan (60 iterations), beside a flat
# guess. Usage:
#   bash benchmarks/star_no_training.sh [OUT_DIR] [MODEL]
# MODEL: default the shipped probe-conditioned model (ptynet-s-probe). Needs ../shared/data (or
# $PTYFAST_SHARED_DATA); about 3 minutes on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
data="${PTYFAST_SHARED_DATA:-$here/../shared/data}"
out="${1:-runs/star-no-training}"
model="${2:-ptynet-s-probe}"
if [ -f "$model" ]; then model="$(realpath "$model")"; fi
mkdir -p "$out"
cd "$out"
[ -f star.cxi ] || ptyfast convert "$data/tike-siemens-star/siemens-star-small.npz.bz2" -o star.cxi
[ -f full_rpie.h5 ] || ptyfast refine star.cxi -n 60 -o full_rpie.h5 --no-png
[ -f probe_top30.h5 ] || ptyfast refine star.cxi --frames 0:258 -n 30 -o probe_top30.h5 --no-png
ptyfast reconstruct star.cxi --model "$model" --probe probe_top30.h5 -o nn_star.h5
ptyfast evaluate nn_star.h5 --reference full_rpie.h5 --json nn_vs_full.json
python - "$model" <<'EOF'
import json, sys
q = json.load(open("nn_vs_full.json"))
res = {"model": sys.argv[1],
       "phase_psnr_gain_db": q["reconstruction"]["phase_psnr"] - q["flat"]["phase_psnr"],
       "amplitude_psnr_gain_db": q["reconstruction"]["amplitude_psnr"] - q["flat"]["amplitude_psnr"], "quality": q}
json.dump(res, open("star_no_training.json", "w"), indent=2)
print(f"whole star, no training on it: phase {res['phase_psnr_gain_db']:+.2f} dB, amplitude "
      f"{res['amplitude_psnr_gain_db']:+.2f} dB over flat against rPIE of the whole scan")
EOF
