#!/usr/bin/env python3
"""One training step of transformers' Qwen2 in PyTorch eager, the baseline of `davinci bench step`.

The same work as `davinci bench step` on one rank: a random token row of `--seq-len`, the
mean next-token loss over it, backward, then AdamW. The model is built from the
`config.json` that `davinci info MODEL --config-json` prints, in float32 with PyTorch's
scaled-dot-product attention, on `--threads` CPU threads. One untimed warmup step, then
`--steps` timed ones. Prints one JSON line: `{"tokens_per_s": ..., "seconds_per_step": ...}`.
"""

import argparse
import json
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="config.json of the model")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with open(args.config) as f:
        config = Qwen2Config(**json.load(f))
    config._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(config).float().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    tokens = torch.randint(0, config.vocab_size, (1, args.seq_len))

    def step() -> None:
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    print(json.dumps({"tokens_per_s": args.seq_len / seconds, "seconds_per_step": seconds}))


if __name__ == "__main__":
    main()
