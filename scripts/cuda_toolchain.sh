#!/usr/bin/env bash
# Installs the CUDA compiler from PyPI wheels into .venv-cuda (they work on a machine
# without a GPU) and prints the environment to use:
#     eval "$(scripts/cuda_toolchain.sh)"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv-cuda"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    nvidia-cuda-nvcc==13.5.37 nvidia-cuda-runtime==13.5.37 nvidia-cuda-cccl==13.3.5.0.6 \
    nvidia-cuda-cuobjdump==13.5.37 nvidia-cuda-nvdisasm==13.5.37 >&2
cuda=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
echo "export CUDA_HOME=$cuda"
echo "export PATH=$cuda/bin:\$PATH"
echo "export CUDARC_CUDA_VERSION=13000"
echo "export CUDA_COMPUTE_CAP=90"
