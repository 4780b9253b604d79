#!/usr/bin/env bash
# Build the peer servers the comparison (bench/compare.sh) runs against, into ~/.cache/aiaas/peers:
# - mistral.rs's own server (`mistralrs-cli` 0.8.1 from crates.io), with the same CPU flags as
#   aiaas (.cargo/config.toml) so the comparison is of the servers, not of the compilers;
# - llama.cpp's server through PyPI's `llama-cpp-python[server]`, which builds llama.cpp from
#   source. A native build (AVX-512 / AMX) was seen to crash at generation on this VM: AVX2 is
#   the safe choice, and the same instruction level aiaas is built for.
#
#   bench/install-peers.sh             # both
#   bench/install-peers.sh llama       # one of: mistralrs, llama
set -euo pipefail
CACHE=${AIAAS_CACHE:-$HOME/.cache/aiaas}
PEERS=$CACHE/peers
which=${1:-all}

if [ "$which" = all ] || [ "$which" = llama ]; then
  if [ ! -x "$PEERS/llama-venv/bin/python" ] || ! "$PEERS/llama-venv/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
    python3 -m venv "$PEERS/llama-venv"
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF" \
      "$PEERS/llama-venv/bin/pip" install --quiet --no-cache-dir 'llama-cpp-python[server]==0.3.36'
  fi
fi

if [ "$which" = all ] || [ "$which" = mistralrs ]; then
  # LTO off and 16 codegen units: a shorter build on 2 cores, the same opt-level 3 code.
  RUSTFLAGS="-C target-cpu=x86-64-v3" CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo install mistralrs-cli --version 0.8.1 --locked \
    --root "$PEERS" --target-dir "$CACHE/peer-target"
fi
