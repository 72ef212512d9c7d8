#!/usr/bin/env bash
# Compiles every kernels/*.cu for sm_80 (A100) and sm_90a (H100/H200) with ptxas's resource
# report, prints registers, shared memory, stack and spills per kernel, and fails on a
# spill or a local-memory stack frame unless the kernel is in kernels/allow-spills.txt
# (one `name reason...` per line); sources named *_sm90.cu are Hopper-only, built for sm_90a
# alone. Then checks with cuobjdump that every kernel listed in
# kernels/tensor-core.txt has tensor-core instructions (HMMA) in its SASS, and runs the
# static performance model (scripts/perf_model.py) against its bands.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/cuda_toolchain.sh)"
out=target/kernels
mkdir -p "$out"
allowed=$(grep -v '^#' kernels/allow-spills.txt 2>/dev/null | awk '{print $1}' || true)
status=0
for source in kernels/*.cu; do
    name=$(basename "$source" .cu)
    archs="sm_80 sm_90a"
    case "$name" in *_sm90) archs=sm_90a ;; esac  # Hopper-only instructions
    for arch in $archs; do
        log="$out/$name.$arch.log"
        nvcc -std=c++17 -O3 -arch="$arch" -cubin -Xptxas -v -I kernels \
            -o "$out/$name.$arch.cubin" "$source" 2> "$log" || { cat "$log"; exit 1; }
        # ptxas prints, per kernel: "Function properties for K" then the stack/spill line,
        # and "Compiling entry function 'K'" ... "Used N registers, ... smem".
        awk -v arch="$arch" -v allowed="$allowed" '
            /Compiling entry function/ { match($0, /'"'"'[^'"'"']+'"'"'/); fn = substr($0, RSTART + 1, RLENGTH - 2) }
            /Function properties for/ { props = $NF }
            /bytes stack frame/ {
                stack = $1; stores = $5; loads = $9
                if (stack + stores + loads > 0 && index(" " allowed " ", " " props " ") == 0) {
                    printf "ERROR %s %s: %s bytes stack, %s spill stores, %s spill loads\n", arch, props, stack, stores, loads
                    bad = 1
                }
            }
            /Used [0-9]+ registers/ { sub(/^.*Used/, "Used"); printf "%-8s %-24s %s\n", arch, fn, $0 }
            END { exit bad }
        ' "$log" || status=1
    done
done
while read -r source kernel; do
    case "$source" in ''|'#'*) continue ;; esac
    archs="sm_80 sm_90a" opcode=HMMA
    case "$source" in *_sm90) archs=sm_90a opcode=HGMMA ;; esac
    for arch in $archs; do
        count=$(cuobjdump --dump-sass -fun "$kernel" "$out/$source.$arch.cubin" | grep -c "$opcode" || true)
        if [ "$count" -eq 0 ]; then
            echo "ERROR $arch $kernel: no $opcode in its SASS" && status=1
        else
            echo "$arch $kernel: $count $opcode instruction(s)"
        fi
    done
done < kernels/tensor-core.txt
# The static performance model on the SASS just built: every kernel's prediction inside its
# band (kernels/perf-bands.toml), and docs/kernels.md and kernels/perf-predicted.tsv current.
python3 scripts/test_perf_model.py
python3 scripts/perf_model.py --check-docs || status=1
exit $status
