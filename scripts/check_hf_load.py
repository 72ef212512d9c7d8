#!/usr/bin/env python3
"""Checks that transformers loads a checkpoint saved by davinci and computes the same logits.

    davinci convert --model SRC --out CKPT [--dtype bf16] [--max-shard-bytes N]
    davinci logits --model CKPT --tokens TOKENS.jsonl --out LOGITS.safetensors
    python scripts/check_hf_load.py CKPT TOKENS.jsonl LOGITS.safetensors

Loads CKPT with `Qwen2ForCausalLM.from_pretrained` (eager attention, float32 compute),
runs every line of TOKENS.jsonl, and prints the largest logit and loss difference
against davinci's output. Exits non-zero above 1e-4 relative (f32).
"""

import json
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main() -> int:
    ckpt, tokens_path, logits_path = sys.argv[1:4]
    model = AutoModelForCausalLM.from_pretrained(ckpt, attn_implementation="eager", dtype=torch.float32).eval()
    ours = load_file(logits_path)
    worst = 0.0
    with open(tokens_path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    for n, record in enumerate(records):
        ids = torch.tensor(record["input_ids"])[None]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        diff = (logits - ours[f"logits.{n}"]).abs().max().item() / logits.abs().max().item()
        worst = max(worst, diff)
        line = f"line {n + 1}: max |logit diff| / max |logit| = {diff:.2e}"
        if "labels" in record:
            loss = F.cross_entropy(logits, torch.tensor(record["labels"]), ignore_index=-100).item()
            line += f", loss transformers {loss:.6f} davinci {ours[f'loss.{n}'].item():.6f}"
        print(line)
    print(f"{type(model).__name__} from {ckpt}: worst relative logit difference {worst:.2e}")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
