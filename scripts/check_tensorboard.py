#!/usr/bin/env python3
"""Reads a run's TensorBoard event file with TensorBoard's own reader and checks it
against the run's metrics.jsonl: the same scalars, tagged STAGE/NAME, at the same steps,
each step once.

    python3 scripts/check_tensorboard.py checkpoints/tiny

Needs the `tensorboard` package; scripts/check_tensorboard.sh makes a virtual environment
with it and runs this.
"""

import json
import math
import pathlib
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# metrics.jsonl key -> TensorBoard tag suffix, and how the value is written.
SCALARS = {
    "loss": ("loss", 1.0),
    "lr": ("lr", 1.0),
    "grad_norm": ("grad_norm", 1.0),
    "tokens_per_second": ("tokens_per_second", 1.0),
    "tokens_seen": ("tokens_seen", 1.0),
    "tflops": ("tflops", 1.0),
    "mfu": ("mfu", 1.0),
    "peak_memory_bytes": ("peak_memory_gib", 1.0 / 2**30),
    "data_wait_seconds": ("data_wait_seconds", 1.0),
    "collective_seconds": ("collective_seconds", 1.0),
}


def main(run):
    run = pathlib.Path(run)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    expected = {}
    for m in metrics:
        for key, (name, scale) in SCALARS.items():
            value = m.get(key)
            if value is not None and math.isfinite(value):
                expected[(f"{m['stage']}/{name}", m["step"])] = value * scale

    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    got = {}
    for tag in events.Tags()["scalars"]:
        for event in events.Scalars(tag):
            if (tag, event.step) in got:
                sys.exit(f"{tag} step {event.step} is written twice")
            got[(tag, event.step)] = event.value

    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        sys.exit(f"missing from the event file: {missing[:5]}; not in metrics.jsonl: {extra[:5]}")
    for key, want in expected.items():
        # The event file holds float32.
        if abs(got[key] - want) > 1e-6 * max(abs(want), 1e-30) + 1e-30:
            sys.exit(f"{key}: {got[key]} in the event file, {want} in metrics.jsonl")
    stages = sorted({tag.split("/")[0] for tag, _ in got})
    print(f"{run}: {len(got)} scalars over {len(metrics)} steps of stages {', '.join(stages)} "
          "match metrics.jsonl")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "checkpoints/tiny")
