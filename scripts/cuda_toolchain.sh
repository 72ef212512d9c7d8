#!/usr/bin/env bash
# Installs the CUDA compiler from PyPI wheels into .venv-cuda (they work on a machine
# without a GPU) and prints the environment to use:
#     eval "$(scripts/cuda_toolchain.sh)"
#
# The toolkit is the oldest with nvcc on PyPI, CUDA 13.0, because what it builds sets the
# oldest driver that runs davinci: candle's kernels are PTX, which the driver compiles only
# if it knows the PTX version, and cudarc is bound to this CUDA version. So a driver of
# CUDA 13.0 (R580) or newer runs this build. candle's PTX targets compute_80
# (CUDA_COMPUTE_CAP=80) so that it runs on A100 as well as H100; davinci's own kernels carry
# sm_80 and sm_90a cubins and compute_80 PTX whatever this says. For an older driver, build
# with a local CUDA 12 toolkit instead (nvcc on PATH, CUDARC_CUDA_VERSION=12040 or the
# toolkit's version, CUDA_COMPUTE_CAP=80): see the README.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv-cuda"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
    nvidia-cuda-cuobjdump==13.5.37 nvidia-cuda-nvdisasm==13.5.37 >&2
cuda=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
echo "export CUDA_HOME=$cuda"
echo "export PATH=$cuda/bin:\$PATH"
echo "export CUDARC_CUDA_VERSION=13000"
echo "export CUDA_COMPUTE_CAP=80"
