#!/usr/bin/env bash
# Trains the bundled tokenizer (recipes/tokenizer/tokenizer.json): a byte-level BPE in
# Qwen2.5's layout with its special tokens, learnt from the bundled sample data as the
# templates render it. Run from the repository root after changing the sample data:
#   bash scripts/make_tokenizer.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
davinci=target/release/davinci
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
render() { # file template
    local n
    n=$(grep -c . "$1" || true)
    "$davinci" data show "$1" --template "$2" --count "$n" >> "$corpus/corpus.txt"
}
render recipes/data/prs-general.jsonl pr-general
render recipes/data/prs-python.jsonl pr-python
for f in recipes/data/trajectories-*.jsonl; do render "$f" chatml; done
for f in recipes/data/swe-agent/*.traj; do "$davinci" data show "$f" --template chatml >> "$corpus/corpus.txt"; done
render recipes/data/plain-text.jsonl text
"$davinci" data train-tokenizer "$corpus/corpus.txt" --vocab-size 2048 --out recipes/tokenizer/tokenizer.json
