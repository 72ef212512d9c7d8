#!/usr/bin/env python3
"""Writes the reference file of the 13-gram decontamination check (a recipe's
`ngram_references`): one benchmark prompt per entry, entries separated by `---` lines.

The large recipes check against SWE-Bench Verified's problem statements and HumanEval's
prompts. Both are public on the Hugging Face Hub; with network access and
`pip install datasets`:

    python3 scripts/benchmark_prompts.py --swe-bench-verified --humaneval \
        --out recipes/data/davinci-dev/benchmarks.txt

Offline, or for other benchmarks, give JSONL files and the field holding the prompt
(repeatable): `--jsonl FILE FIELD`.
"""

import argparse
import json
import os
import re
import sys
import tempfile

HUB = {
    # (dataset on the Hub, split, field)
    "swe_bench_verified": ("princeton-nlp/SWE-bench_Verified", "test", "problem_statement"),
    "humaneval": ("openai/openai_humaneval", "test", "prompt"),
}

SEPARATOR = "\n---\n"


def from_hub(name):
    repo, split, field = HUB[name]
    try:
        import datasets  # only needed for the Hub sources
    except ImportError:
        sys.exit("the Hub sources need `pip install datasets` (or give --jsonl files)")
    return [row[field] for row in datasets.load_dataset(repo, split=split)]


def from_jsonl(path, field):
    prompts = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                prompts.append(json.loads(line)[field])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                sys.exit(f"{path}:{number}: no `{field}` field ({e})")
    return prompts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swe-bench-verified", action="store_true", help="SWE-Bench Verified problem statements")
    parser.add_argument("--humaneval", action="store_true", help="HumanEval prompts")
    parser.add_argument("--jsonl", nargs=2, action="append", default=[], metavar=("FILE", "FIELD"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    prompts = []
    if args.swe_bench_verified:
        prompts += from_hub("swe_bench_verified")
    if args.humaneval:
        prompts += from_hub("humaneval")
    for path, field in args.jsonl:
        prompts += from_jsonl(path, field)
    # An entry may not hold a separator line itself, or it would split in two.
    entries = [re.sub(r"(?m)^---\r?$", "- - -", p).strip() for p in prompts if p and p.strip()]
    if not entries:
        sys.exit("no prompts: name at least one source")
    directory = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(directory, exist_ok=True)
    # Written under a temporary name and renamed: a half-written file is never read.
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=directory, delete=False) as f:
        f.write(SEPARATOR.join(entries) + "\n")
    os.replace(f.name, args.out)
    print(f"wrote {len(entries)} prompts to {args.out}")


if __name__ == "__main__":
    main()
