#!/usr/bin/env bash
# The device check: everything ptyfast does on a CUDA GPU, in one call of a lent machine (see benchmarks/README.md).
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh [section ...]
#   (sections, in this order: env tests refine bench auto kernels demo suite train; default all)
#
# Run from the repository root on the GPU machine, whose python3 already has torch (CUDA) and CuPy. Optional inputs
# (the machine reaches no package index): .gpu/*.whl (wheels the image lacks, e.g. hdf5plugin, installed into
# /tmp/site on PYTHONPATH) and .gpu/shared/data (a copy of ../shared/data: the star, the cat faces). Every section has
# its own time limit and its failure does not stop the next; a table of return codes and seconds comes last.
# BUDGET (seconds, default 480) bounds the whole script: the training stage and the background suite get what is
# left of it. At most 8 files come back from a lent machine, so the logs are re-packed into $OUT/logs.tar.gz after
# each section (a call cut short still returns what ran).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
FILES=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
[ -d .gpu/shared/data ] && export PTYFAST_SHARED_DATA=$PWD/.gpu/shared/data
SECTIONS=${*:-env tests refine bench auto kernels demo suite train}
BUDGET=${BUDGET:-480}
PY="python3 -P"   # -P: the checkout's ptyfast/ folder must not shadow the installed package
declare -A RESULT
T0=$(date +%s)

pack() { tar czf "$OUT/logs.tar.gz.part" -C "$FILES" . && mv "$OUT/logs.tar.gz.part" "$OUT/logs.tar.gz"; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }  # seconds of the budget left
want() { [[ " $SECTIONS " == *" $1 "* ]]; }

section() {  # section NAME LIMIT_S COMMAND...: run with a time limit, log to NAME.log, record rc and seconds
    local name=$1 limit=$2; shift 2
    local t
    t=$(date +%s)
    echo "=== $name (limit ${limit}s) ==="
    timeout -k 10 "$limit" bash -c "$*" > "$FILES/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$FILES/$name.log"
    RESULT[$name]="rc=$rc $(( $(date +%s) - t ))s"
    echo "--- $name: ${RESULT[$name]}"
    pack
}

# --- environment and install (everything else needs it) ---
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu \
    --format=csv
$PY -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA DEVICE')"
$PY -c "import cupy; print('cupy', cupy.__version__, 'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion())" \
    || echo "CuPy missing: the kernel checks will skip"
command -v nvcc >/dev/null && nvcc --version | tail -n 1
if compgen -G ".gpu/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$FILES/install.log" 2>&1; then
    echo "install failed:"
    tail -n 20 "$FILES/install.log"
fi
$PY -c "import ptyfast, hdf5plugin, h5py; from ptyfast.machine import gpu_name; print('ptyfast', ptyfast.__version__,
'h5py', h5py.__version__, 'hdf5plugin', hdf5plugin.version, 'gpu', gpu_name())"

want env && section env 60 "$PY -c 'import json; from ptyfast.machine import device_facts, measure_peak_flops as m;
print(json.dumps(device_facts(16))); print(m(threads=16, device=\"cuda\", n=8192))'; $PY -m pip list 2>/dev/null | grep -iE \
'^(torch|cupy|onnx|onnxruntime|numpy|scipy|h5py|scikit-image|typer|pytest-xdist) '"

# every test that needs a GPU (CuPy kernels vs numpy twins, TensorRT where installed), the CUDA compile checks
# (nvcc, NVRTC) and the torch simulator on the device
want tests && section tests 120 "$PY -m pytest -q -rs -p no:cacheprovider -m gpu tests; \
$PY -m pytest -q -rs -p no:cacheprovider tests/test_cuda_compile.py tests/test_training.py -k 'gpu or nvcc or nvrtc or host'"

want refine && section refine 60 "$PY benchmarks/gpu_refine.py --iterations 20 --json $FILES/gpu_refine.json"

# model only (batch sweep, fp32/bf16/fp16) and end to end (simulate -> CXI -> reconstruct), torch on the GPU
want bench && section bench 120 "ptyfast bench --device cuda --backend torch --precision fp32,bf16,fp16 \
--batch 1,128,512,2048 --max-seconds 1.0 --frames 4096 --json $FILES/bench-gpu.json"

# --backend auto on this machine: ONNX Runtime (CPU, or CUDA where its provider is installed) against torch on the
# GPU, whole processes, alternated, on 1,600 and 4,096 frames; then what auto picks for each
want auto && section auto 150 "$PY benchmarks/reconstruct_race.py --frames 1600 4096 --rounds 2"

want kernels && section kernels 60 "$PY -m pytest -q -p no:cacheprovider benchmarks/bench_kernels.py \
benchmarks/bench_pipeline.py -m gpu --benchmark-only --benchmark-json $FILES/bench-kernels-gpu.json \
--benchmark-columns=median,iqr,rounds -k 'not end_to_end'"

want demo && section demo 60 "ptyfast demo -o /tmp/gpu-demo && ls -la /tmp/gpu-demo"

# the full suite in the background while the GPU trains (16 cores: the suite is CPU-bound, training GPU-bound)
if want suite; then
    SUITE_LIMIT=$(( $(left) - 20 ))
    echo "=== suite (background, limit ${SUITE_LIMIT}s) ==="
    # SIGINT at the limit: pytest still prints its summary (the failures' tracebacks); the whole suite needs
    # ≈ 150 s on 14 workers of an idle 16-core machine (91 % of it ran in 132 s on 2026-12-04)
    # pytest-xdist and pytest-timeout are not ptyfast's test dependencies: their flags only where installed
    PLUGINS=""
    $PY -c "import xdist" 2>/dev/null && PLUGINS="-n 14"
    $PY -c "import pytest_timeout" 2>/dev/null && PLUGINS="$PLUGINS --timeout 120"
    ( timeout -s INT -k 20 "$SUITE_LIMIT" $PY -m pytest -v -p no:cacheprovider $PLUGINS --tb=short tests \
        > "$FILES/suite.log" 2>&1; echo "rc=$?" > "$FILES/suite.rc" ) &
    SUITE_PID=$!
fi

# a PtyNet-S stage on the GPU from the shipped weights (stage 5's recipe, batch 256, simulated on the device):
# a 300-step calibration gives patterns/s (between its validations at steps 100 and 300: past the warm-up; on the
# H200 the whole of a 100-step run gave 2,200 against 9,600 in the stage), then what is left of the budget;
# best.pt, best.json, log.jsonl come back
if want train; then
    FACES=${PTYFAST_SHARED_DATA:-../shared/data}/ptynet-cat-faces/cat_face
    ARGS="$FACES --init-from ptyfast/data/ptynet-s.pt --batch 256 --lr 5e-4 --warmup 0.02 --val-size 512 \
--pool-size 320 --noise 0.5 --photons 1e5:1e8 --val-seed 4 --simulate torch --threads 8"
    section train_calibrate 90 "ptyfast train $ARGS -o /tmp/gpu-cal --steps 300 --val-every 100 --seed 70"
    RATE=$($PY -c "import json; r=[json.loads(l) for l in open('/tmp/gpu-cal/log.jsonl')][1:];
print(int((r[-1]['patterns'] - r[0]['patterns']) / max(r[-1]['time_s'] - r[0]['time_s'], 1e-3)))" 2>/dev/null || echo 0)
    TRAIN_SECONDS=$(( $(left) - 75 ))  # start-up (the pool) and the last validation fit in the 75 s
    echo "training rate incl. validation: $RATE patterns/s; ${TRAIN_SECONDS}s to train"
    if [ "$RATE" -gt 0 ] && [ "$TRAIN_SECONDS" -gt 30 ]; then
        STEPS=$(( RATE * TRAIN_SECONDS / 256 ))
        section train $(( TRAIN_SECONDS + 60 )) "ptyfast train $ARGS -o /tmp/gpu-stage --steps $STEPS \
--val-every $(( STEPS / 10 > 0 ? STEPS / 10 : 1 )) --seed 7"
        cp /tmp/gpu-stage/best.pt /tmp/gpu-stage/log.jsonl /tmp/gpu-stage/best.json "$OUT/" 2>/dev/null
    else
        echo "train: skipped"
    fi
fi

if want suite; then
    wait "$SUITE_PID"
    RESULT[suite]="$(cat "$FILES/suite.rc" 2>/dev/null || echo 'rc=?') (background)"
    tail -n 15 "$FILES/suite.log"
fi

pack
echo "=== summary ($(( $(date +%s) - T0 ))s) ==="
for k in "${!RESULT[@]}"; do printf '%-16s %s\n' "$k" "${RESULT[$k]}"; done | sort
