#!/usr/bin/env bash
# The quickstart: fetch the demo models, build, and serve them on 127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-demo-models.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${AIAAS_CACHE:-$HOME/.cache/aiaas}/target}
# The dev profile builds dependencies (the model code) at opt-level 3 and shares its artifacts
# with `make test` (same command, so the same features: nothing is built twice); `--release` is
# the choice for production builds. The database is ./aiaas.db unless AIAAS__DATABASE__URL says.
cargo build --workspace --all-targets --locked
exec "$CARGO_TARGET_DIR/debug/aiaas" serve \
  --model smollm2-135m-instruct="$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf" \
  --model all-minilm-l6-v2="$PWD/models/all-MiniLM-L6-v2" "$@"
