#!/usr/bin/env bash
# davinci's training step against transformers' Qwen2 in PyTorch eager, side by side.
#
#   benches/vs_pytorch/compare.sh [ROUNDS [FILTER]]   (default 3 rounds, every shape)
#
# For each shape (whose label contains FILTER), ROUNDS rounds that each run PyTorch, then
# davinci as it trains by default (each layer recomputed in the backward), then davinci
# keeping every layer's activations as PyTorch eager does (`--keep-activations`),
# alternating so that a machine's drift hits all alike, all on THREADS threads (default 2).
# Prints each one's median tokens/s and davinci's ratios to PyTorch. PyTorch comes from PyPI into a virtual environment
# of its own (DAVINCI_TORCH_VENV, default ~/.cache/davinci/venv-torch), made on first use.
# Not run by CI: it downloads PyTorch, and timings belong to benchmarks, not tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-3}"
filter="${2:-}"
threads="${THREADS:-2}"
venv="${DAVINCI_TORCH_VENV:-$HOME/.cache/davinci/venv-torch}"

if ! "$venv/bin/python" -c "import torch, transformers" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch transformers
fi
cargo build --release --locked --quiet
davinci=target/release/davinci
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
tokens_per_s() { python3 -c 'import json, sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["tokens_per_s"])'; }

# model, layers (empty: the preset's), sequence length, timed steps
shapes=(
    "tiny||1024|5"
    "tiny||2048|5"
    "qwen2.5-0.5b|2|2048|2"
)
printf '%-26s %10s %10s %7s %10s %7s\n' shape PyTorch recompute ratio kept ratio
for shape in "${shapes[@]}"; do
    IFS='|' read -r model layers seq steps <<<"$shape"
    label="$model${layers:+ ($layers layers)} @ $seq"
    [[ "$label" == *"$filter"* ]] || continue
    layer_args=()
    [[ -n "$layers" ]] && layer_args=(--layers "$layers")
    "$davinci" info "$model" --config-json "${layer_args[@]}" >"$workdir/config.json"
    : >"$workdir/torch" && : >"$workdir/recompute" && : >"$workdir/kept"
    for _ in $(seq "$rounds"); do
        "$venv/bin/python" benches/vs_pytorch/pytorch_step.py --config "$workdir/config.json" \
            --seq-len "$seq" --steps "$steps" --threads "$threads" | tokens_per_s >>"$workdir/torch"
        for variant in recompute kept; do
            extra=()
            [[ "$variant" == kept ]] && extra=(--keep-activations)
            RAYON_NUM_THREADS="$threads" "$davinci" bench step --model "$model" "${layer_args[@]}" \
                --seq-len "$seq" --steps "$steps" --json "${extra[@]}" 2>/dev/null \
                | tokens_per_s >>"$workdir/$variant"
        done
    done
    torch="$(median <"$workdir/torch")"
    recompute="$(median <"$workdir/recompute")"
    kept="$(median <"$workdir/kept")"
    printf '%-26s %10.0f %10.0f %6.2fx %10.0f %6.2fx\n' "$label" "$torch" "$recompute" \
        "$(python3 -c "print($recompute / $torch)")" "$kept" "$(python3 -c "print($kept / $torch)")"
done
