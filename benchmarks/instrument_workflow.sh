#!/usr/bin/env bash
# Learn from the instrument (issue 14) on the real Tike Siemens star: rPIE of the upper half → train on its
# windows → reconstruct the held-out lower half at network speed → compare with rPIE of the whole scan →
# refine the lower half from the network's result. Usage:
#   bash benchmarks/instrument_workflow.sh [OUT_DIR] [STEPS] [INIT]
# INIT: the weights training starts from (default the four-stage PtyNet-S, checkpoints/ptynet-s-stage4/best.pt:
# the best start for this workflow measured so far; docs/training.md has the others, the shipped model's too).
# Needs ../shared/data (or $PTYFAST_SHARED_DATA); about 10 minutes on 2 cores with the default 1500 steps.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
data="${PTYFAST_SHARED_DATA:-$here/../shared/data}"
out="${1:-runs/instrument}"
steps="${2:-1500}"
init="$(realpath "${3:-$here/checkpoints/ptynet-s-stage4/best.pt}")"
mkdir -p "$out"
cd "$out"
# t CMD...: run CMD (its output appended to workflow.log), print its wall seconds; fail when CMD fails.
t() { if /usr/bin/time -f "%e" -o .t "$@" >> workflow.log 2>&1; then tail -n 1 .t; else echo "failed: $*" >&2; return 1; fi; }
# t_any: the same, but a refinement that stops as diverged (exit 1) still reports its time
t_any() { /usr/bin/time -f "%e" -o .t "$@" >> workflow.log 2>&1 || true; tail -n 1 .t; }

ptyfast convert "$data/tike-siemens-star/siemens-star-small.npz.bz2" -o star.cxi
# references: rPIE (60 iterations: the error plateaus by ~20; with probe updates it runs away after ~90)
ptyfast refine star.cxi -n 60 -o full_rpie.h5 --no-png
ptyfast refine star.cxi --frames 0:258 -n 60 -o ref_top.h5
s_train=$(t ptyfast train star.cxi --labels ref_top.h5 --frames 0:258 -o run --steps "$steps" --val-every 500 \
          --mix-simulated 0.5 --threads 2 --init-from "$init") || exit 1
s_nn=$(t ptyfast reconstruct star.cxi --frames 258:516 --model run/best.pt -o nn_bottom.h5) || exit 1
ptyfast evaluate nn_bottom.h5 --reference full_rpie.h5 --json nn_vs_full.json
s_r20=$(t_any ptyfast refine star.cxi --frames 258:516 --init nn_bottom.h5 -n 20 -o nn_rpie20.h5 --no-png)
s_f100=$(t_any ptyfast refine star.cxi --frames 258:516 -n 100 -o flat_rpie100.h5 --no-png)
python - "$s_train" "$s_nn" "$s_r20" "$s_f100" "$init" <<'EOF'
import json, sys
import h5py
s_train, s_nn, s_r20, s_f100 = map(float, sys.argv[1:5])
q = json.load(open("nn_vs_full.json"))
err = {k: (float(h5py.File(f)["errors"][-1]), int(len(h5py.File(f)["errors"])), bool(h5py.File(f).attrs["diverged"]))
       for k, f in (("nn_rpie20", "nn_rpie20.h5"), ("flat_rpie100", "flat_rpie100.h5"))}
res = {"init_from": sys.argv[5], "train_s": s_train, "reconstruct_258_s": s_nn, "reconstruct_patterns_per_s": 258 / s_nn,
       "refine_nn20_s": s_r20, "refine_flat100_s": s_f100,
       "phase_psnr_gain_db": q["reconstruction"]["phase_psnr"] - q["flat"]["phase_psnr"],
       "amplitude_psnr_gain_db": q["reconstruction"]["amplitude_psnr"] - q["flat"]["amplitude_psnr"],
       "quality": q, "final_error": err}
json.dump(res, open("instrument_workflow.json", "w"), indent=2)
print(json.dumps({k: v for k, v in res.items() if k != "quality"}, indent=2))
EOF
