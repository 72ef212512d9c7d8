#!/usr/bin/env bash
# What to run first on a machine with an NVIDIA GPU: builds davinci with CUDA, then runs
#   1. `davinci doctor` (driver, device, every fatbin kernel, every kernel against the CPU
#      at Qwen2.5-32B's shapes, training steps against the CPU, NCCL, kernel speed beside
#      the predicted bands);
#   2. the kernel tests against the device (and under the emulation);
#   3. `bench kernels` at Qwen2.5-32B's shapes in bf16;
#   4. the tiny recipe with `--device cuda`.
# Each step's output and result go to one report (default gpu-check-report.txt), which
# is what to send back. After the build (a few minutes on a GPU node's cores) the steps
# take under ten minutes on one H100. Usage: scripts/gpu_check.sh [REPORT]
set -uo pipefail
cd "$(dirname "$0")/.."
report=$(realpath -m "${1:-gpu-check-report.txt}")
: > "$report"
failed=0

step() {
    local name=$1
    shift
    echo "== $name: $*" | tee -a "$report"
    local started=$SECONDS
    if "$@" >> "$report" 2>&1; then
        echo "== $name: pass ($((SECONDS - started)) s)" | tee -a "$report"
    else
        echo "== $name: FAIL ($((SECONDS - started)) s)" | tee -a "$report"
        failed=$((failed + 1))
    fi
}

{
    date -u
    git rev-parse HEAD 2>/dev/null
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
} >> "$report"

eval "$(scripts/cuda_toolchain.sh)"
step build cargo build --release --locked --features davinci-cli/cuda
davinci=target/release/davinci
step doctor "$davinci" doctor
step kernel-tests cargo test --release --locked --features davinci-cli/cuda -p davinci-kernels -p davinci-cli
step bench-kernels "$davinci" bench kernels --model qwen2.5-32b --tokens 8192 --dtype bf16 --device cuda
step prepare "$davinci" data prepare recipes/tiny.toml
step tiny-recipe "$davinci" train recipes/tiny.toml --device cuda --output-dir "checkpoints/tiny-gpu-$(date +%s)"

echo "$failed step(s) failed; the report is $report" | tee -a "$report"
[ "$failed" -eq 0 ]
