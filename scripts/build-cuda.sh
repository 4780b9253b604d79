#!/usr/bin/env bash
# Build the CUDA server on a GPU host: target/release/aiaas with `--features cuda` (paged
# attention on by default). Needs the CUDA toolkit (nvcc on PATH, or CUDA_HOME) and the
# driver; the GPU's compute capability is read from nvidia-smi unless CUDA_COMPUTE_CAP is set
# (e.g. CUDA_COMPUTE_CAP=90 to build for H100/H200 on a machine without a GPU).
#   FEATURES="cuda flash-attn" scripts/build-cuda.sh   # with flash attention (much longer build)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvcc >/dev/null; then
  for dir in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
    if [ -n "$dir" ] && [ -x "$dir/bin/nvcc" ]; then
      export PATH="$dir/bin:$PATH"
      break
    fi
  done
fi
if ! command -v nvcc >/dev/null; then
  echo "build-cuda: nvcc not found; install the CUDA toolkit or set CUDA_HOME" >&2
  exit 1
fi
if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
  if ! CUDA_COMPUTE_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null |
    head -1 | tr -d '. '); then
    echo "build-cuda: no GPU visible to nvidia-smi; set CUDA_COMPUTE_CAP (e.g. 90)" >&2
    exit 1
  fi
fi
export CUDA_COMPUTE_CAP
FEATURES=${FEATURES:-cuda}
echo "build-cuda: $(nvcc --version | tail -1), compute capability $CUDA_COMPUTE_CAP, features $FEATURES"
exec cargo build --release --locked -p aiaas-server --features "$FEATURES"
