#!/usr/bin/env bash
# Checks a run's TensorBoard event file with TensorBoard's own reader (see
# check_tensorboard.py), from a virtual environment made here with the `tensorboard`
# package:  scripts/check_tensorboard.sh checkpoints/tiny
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv-tensorboard"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check tensorboard==2.21.0
"$venv/bin/python" "$root/scripts/check_tensorboard.py" "$@"
