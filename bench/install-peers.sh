#!/usr/bin/env bash
# Build the peer servers the benchmark compares against, into ~/.cache/aiaas/peers:
# mistral.rs's own server (`mistralrs-cli` 0.8.1 from crates.io), with the same CPU flags as
# aiaas (.cargo/config.toml) so the comparison is of the servers, not of the compilers.
set -euo pipefail
CACHE=${AIAAS_CACHE:-$HOME/.cache/aiaas}
RUSTFLAGS="-C target-cpu=x86-64-v3" cargo install mistralrs-cli --version 0.8.1 --locked \
  --root "$CACHE/peers" --target-dir "$CACHE/peer-target"
