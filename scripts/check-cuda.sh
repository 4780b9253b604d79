#!/usr/bin/env bash
# Compile check of the CUDA build (`cargo check -p aiaas-server --features cuda`) on a machine
# without a GPU or a CUDA toolkit: the CUDA 13.0 compiler and headers come from PyPI into
# $AIAAS_CACHE/cuda (once), and the kernels are compiled for compute capability 9.0. Nothing is
# linked (the driver library exists only on GPU hosts), so this proves that our code and
# mistral.rs's CUDA paths compile together, not that they run.
# Exit 0: checked. Exit 1: the check failed. Exit 3: the toolchain could not be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
AIAAS_CACHE=${AIAAS_CACHE:-$HOME/.cache/aiaas}
VENV=$AIAAS_CACHE/cuda
# One CUDA minor version throughout: a newer nvidia-nvvm emits PTX that nvcc 13.0 rejects.
PACKAGES=("nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-crt==13.0.*"
  "nvidia-cuda-cccl==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cublas==13.0.*"
  "nvidia-cuda-nvrtc==13.0.*" "nvidia-curand==10.4.0.*")
if ! [ -f "$VENV/.complete" ]; then
  echo "check-cuda: installing the CUDA 13.0 compiler from PyPI into $VENV"
  rm -rf "$VENV"
  if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "${PACKAGES[@]}"; }; then
    echo "check-cuda: could not install the CUDA toolchain from PyPI" >&2
    exit 3
  fi
  touch "$VENV/.complete"
fi
CU=$(echo "$VENV"/lib/python3*/site-packages/nvidia/cu13)
if ! [ -x "$CU/bin/nvcc" ]; then
  echo "check-cuda: no nvcc in $CU" >&2
  exit 3
fi
export PATH="$CU/bin:$PATH" CUDA_ROOT="$CU" CUDA_PATH="$CU" CUDA_HOME="$CU"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
echo "check-cuda: $(nvcc --version | tail -1), compute capability $CUDA_COMPUTE_CAP"
cargo check --locked -p aiaas-server --features cuda
