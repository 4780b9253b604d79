#!/usr/bin/env bash
# Side-by-side streaming benchmark on one GGUF file: aiaas vs mistral.rs's own server
# (`mistralrs-cli` 0.8.1 from crates.io), same machine, same prompts, one run.
#
#   bench/compare.sh                 # uses models/SmolLM2-135M-Instruct.Q4_1.gguf (make run fetches it)
#   PEER=none bench/compare.sh       # aiaas only
#
# Environment: MODEL (GGUF path), CONCURRENCY (default 1,2,4,8), REQUESTS (per level, default 16),
# MAX_TOKENS (default 64), PEER_BIN (mistralrs binary; built by bench/install-peers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${AIAAS_CACHE:-$HOME/.cache/aiaas}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
MODEL=${MODEL:-$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf}
CONCURRENCY=${CONCURRENCY:-1,2,4,8}
REQUESTS=${REQUESTS:-16}
MAX_TOKENS=${MAX_TOKENS:-64}
PEER=${PEER:-mistralrs}
PEER_BIN=${PEER_BIN:-$CACHE/peers/bin/mistralrs}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
[ -f "$MODEL" ] || scripts/fetch-demo-models.sh

cargo build -q --workspace --all-targets --locked
AIAAS=$CARGO_TARGET_DIR/debug/aiaas
LOAD=$CARGO_TARGET_DIR/debug/aiaas-load

wait_ready() { # url
  for _ in $(seq 1 600); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "server at $1 never became ready" >&2; return 1
}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

run_load() { # label url model [api key]
  "$LOAD" --url "$2" --model "$3" --label "$1" --api-key "${4:-unused}" --concurrency "$CONCURRENCY" \
    --requests "$REQUESTS" --max-tokens "$MAX_TOKENS" --warmup 2 --json 2>>"$OUT/raw.jsonl"
}

: >"$OUT/raw.jsonl"
{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cores, model $(basename "$MODEL"), max_tokens $MAX_TOKENS, $REQUESTS requests per level"
  DB=$(mktemp -d)/aiaas.db
  AIAAS__LEDGER__JOURNAL_DIR="$(dirname "$DB")/journal" "$AIAAS" serve --bind 127.0.0.1:18181 \
    --model bench="$MODEL" --database-url "sqlite://$DB" \
    >"$OUT/aiaas.out" 2>"$OUT/aiaas.log" &
  pids+=($!)
  wait_ready http://127.0.0.1:18181/ready
  KEY=$(grep -m1 '^sk-aiaas-' "$OUT/aiaas.out")
  run_load aiaas http://127.0.0.1:18181/v1 bench "$KEY"
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

  if [ "$PEER" = mistralrs ] && [ -x "$PEER_BIN" ]; then
    # Same settings as aiaas's defaults: CPU, 16 running sequences, no prefix cache.
    "$PEER_BIN" --token-source none serve --host 127.0.0.1 --port 18182 --cpu --max-seqs 16 \
      --prefix-cache-n 0 --format gguf -m "$(dirname "$MODEL")" -f "$(basename "$MODEL")" \
      >"$OUT/mistralrs.log" 2>&1 &
    pids+=($!)
    wait_ready http://127.0.0.1:18182/v1/models
    run_load mistralrs-server http://127.0.0.1:18182/v1 default | tail -n +3
  fi
} | tee "$OUT/table.md"
