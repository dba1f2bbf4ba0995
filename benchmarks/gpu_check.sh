#!/usr/bin/env bash
# The GPU checks of the JAX kernel, in one run on a machine with an NVIDIA GPU.
#
#   bash benchmarks/gpu_check.sh OUT_DIR [WHEEL_DIR]
#
# WHEEL_DIR (optional) holds wheels of the dependencies the machine lacks; they are
# installed with --no-deps into a temporary folder first (a machine without an index).
# Writes logs and results under OUT_DIR and prints a short table at the end:
#   1. the seed model over 1000 x 1000 points in-process (GPU), a sample against the CPU
#      (GPU_STEPS="seed cli_gpu_cold ..." runs only the steps named)
#   2. the 650 sbottom points, cold (empty compilation cache) then warm in the same
#      process, then warm in a new process (cache filled); cold again with XLA's GPU
#      autotuning off
#   3. `pyhf-dask scan <sbottom> --region RegionA --device gpu` with the default executor
#      and with --executor distributed (dask-cuda's LocalCUDACluster)
#   4. the export-cache tests of the kernel on the GPU
#   5. (step compile) XLA's compilation of the batched fit per sbottom region shape
set -uo pipefail
out=${1:?usage: gpu_check.sh OUT_DIR [WHEEL_DIR]}
wheels=${2:-}
mkdir -p "$out"
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
if [[ -n "$wheels" ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$wheels"/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$here
else
    export PYTHONPATH=$here${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, keep going on failure
    local name=$1 limit=$2
    shift 2
    if [[ -n "${GPU_STEPS:-}" && " $GPU_STEPS " != *" $name "* ]]; then return; fi
    echo "== $name"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "$name rc=$rc $((SECONDS - t0)) s" | tee -a "$out/steps.txt"
}
step seed 200 env PYHF_DASK_JAX_CACHE=/tmp/jc_seed \
    "$py" benchmarks/bench_gpu.py --seed-grid "${SEED_N:-1000}" --warm 100 --sample 40 --arrays \
    --out "$out/seed.json"
# in-process, with the XLA flags the GPU workers get (pyhf_dask.gpu.jax_settings)
step archive_cold 120 env PYHF_DASK_JAX_CACHE=/tmp/jc_arch XLA_FLAGS=--xla_gpu_autotune_level=0 \
    "$py" benchmarks/bench_kernels.py --archive-only --repeat 2 --log-compiles
step archive_warm 60 env PYHF_DASK_JAX_CACHE=/tmp/jc_arch XLA_FLAGS=--xla_gpu_autotune_level=0 \
    "$py" benchmarks/bench_kernels.py --archive-only --log-compiles
step archive_cold_autotuned 120 env PYHF_DASK_JAX_CACHE=/tmp/jc_arch4 \
    "$py" benchmarks/bench_kernels.py --archive-only --repeat 2 --log-compiles
step compile 120 env XLA_FLAGS=--xla_gpu_autotune_level=0 \
    "$py" benchmarks/bench_compile.py --device gpu
cli=(-c "from pyhf_dask.cli import run; run()")
for run in cold warm; do  # a new compilation cache, then the same one
    step "cli_gpu_$run" 120 env PYHF_DASK_JAX_CACHE=/tmp/jc_cli \
        /usr/bin/time -f "cli wall %e s, peak RSS %M KiB" "$py" "${cli[@]}" \
        scan data/pyhf-ins1748602-probability-models.tar.gz --region RegionA --device gpu \
        -o "/tmp/regionA_gpu_$run.nc"
done
step cli_gpu_distributed 150 env PYHF_DASK_JAX_CACHE=/tmp/jc_cli /usr/bin/time -f "cli wall %e s, peak RSS %M KiB" "$py" "${cli[@]}" \
    scan data/pyhf-ins1748602-probability-models.tar.gz --region RegionA --device gpu \
    --executor distributed -o /tmp/regionA_gpu_distributed.nc
step tests_gpu 90 "$py" -m pytest -q -x -p no:cacheprovider tests/kernels/test_export.py
echo "== table"
cat "$out/steps.txt"
grep -h "device:\|seed grid\|warm-up\|sample of\|archive:\|XLA compilations\|Region\|pyhf-dask:\|cli wall" \
    "$out"/*.log
tail -n 3 "$out/tests_gpu.log"
