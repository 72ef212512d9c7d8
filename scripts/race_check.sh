#!/usr/bin/env bash
# Runs every kernel under the CUDA emulation built with ThreadSanitizer: a missing
# __syncthreads (two threads of a block touching one address between barriers, one
# writing) is a data race between the host threads that stand for CUDA threads. First it
# checks that a kernel with its barrier left out is reported, then that ours are clean.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/race-check
mkdir -p "$out"
g++ -std=c++17 -O1 -g -fsanitize=thread -DDAVINCI_EMULATE -ffp-contract=off -Wno-unknown-pragmas -Wno-psabi -x c++ -I kernels \
    kernels/*.cu kernels/emu/race_check.cpp -o "$out/race_check" -pthread
export TSAN_OPTIONS="halt_on_error=1 exitcode=66"
if "$out/race_check" racy > "$out/racy.log" 2>&1; then
    echo "race check: a kernel without its barrier ran clean; ThreadSanitizer is not working" >&2
    exit 1
fi
grep -q "data race" "$out/racy.log" || { cat "$out/racy.log" >&2; exit 1; }
echo "race check: the kernel without its barrier is reported"
"$out/race_check"
echo "race check: no data race in any kernel"
