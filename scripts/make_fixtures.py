#!/usr/bin/env python3
"""Writes the parity fixtures that davinci's model tests compare against.

Run by hand, never by CI (it needs torch and transformers):

    python3 -m venv .venv-fixtures && .venv-fixtures/bin/pip install torch transformers safetensors
    .venv-fixtures/bin/python scripts/make_fixtures.py

For each tiny configuration it builds transformers' `Qwen2ForCausalLM` on the CPU with
eager attention in float32, fills every parameter with random values (norm weights and
biases too, so that a swapped or dropped one shows), and writes to
`crates/model/tests/fixtures/<name>/`:

- `config.json` and `model.safetensors`: the checkpoint, as `save_pretrained` writes it;
- `expected.safetensors`: for each sequence N, `input_ids.N` and `labels.N` (int64,
  labels already shifted: `labels[t]` is the target of position t, -100 = no loss),
  transformers' `logits.N` ([len, vocab]) and `loss.N` (mean cross-entropy over labels
  that are not -100), and `grad.N.<parameter name>`: the gradient of `loss.N` with
  respect to every parameter.
"""

import json
import pathlib

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "model" / "tests" / "fixtures"

CONFIGS = {
    # Grouped-query attention (2 query heads per key/value head), untied LM head.
    "gqa-untied": dict(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=256,
    ),
    # Plain multi-head attention, LM head tied to the embedding, three layers.
    "tied": dict(
        vocab_size=288,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=True,
        rope_theta=1000000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=256,
    ),
}

SEQUENCE_LENGTHS = [5, 13, 22]


def randomize(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Random values everywhere, scaled so that activations stay of order one."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
            elif name.endswith("embed_tokens.weight"):
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / p.shape[1] ** 0.5)


def make_sequence(length: int, vocab: int, generator: torch.Generator):
    ids = torch.randint(0, vocab, (length + 1,), generator=generator)
    input_ids, labels = ids[:-1].clone(), ids[1:].clone()
    labels[-1] = -100  # the last position has no next token
    if length > 6:
        labels[1] = -100  # a masked position inside the sequence
        labels[length // 2] = -100
    return input_ids, labels


def main() -> None:
    torch.manual_seed(0)
    for index, (name, values) in enumerate(CONFIGS.items()):
        generator = torch.Generator().manual_seed(1000 + index)
        config = Qwen2Config(**values, attn_implementation="eager", torch_dtype=torch.float32)
        model = Qwen2ForCausalLM(config).to(torch.float32).eval()
        randomize(model, generator)
        out_dir = OUT / name
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir, safe_serialization=True)
        expected = {}
        for n, length in enumerate(SEQUENCE_LENGTHS):
            input_ids, labels = make_sequence(length, config.vocab_size, generator)
            model.zero_grad(set_to_none=True)
            logits = model(input_ids=input_ids[None]).logits[0]
            loss = F.cross_entropy(logits, labels, ignore_index=-100)
            loss.backward()
            expected[f"input_ids.{n}"] = input_ids
            expected[f"labels.{n}"] = labels
            expected[f"logits.{n}"] = logits.detach().contiguous()
            expected[f"loss.{n}"] = loss.detach().reshape(())
            for pname, p in model.named_parameters():
                expected[f"grad.{n}.{pname}"] = p.grad.detach().clone().contiguous()
        save_file(expected, out_dir / "expected.safetensors")
        written = json.loads((out_dir / "config.json").read_text())
        print(f"{name}: {len(expected)} tensors, config keys: {sorted(written)}")


if __name__ == "__main__":
    main()
