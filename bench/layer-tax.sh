#!/usr/bin/env bash
# The serving layer's own cost, without the rest of compare.sh's set-up: the same optimised
# binary as three servers on the demo GGUF (no embedding model), alternating, REPS times:
#   full          API key auth, a tenant rpm + tpm limit, the usage ledger on SQLite
#   auth+limits   the same with the ledger off
#   bare          auth, limits and ledger off
# at CONCURRENCY (default 1), REQUESTS requests of MAX_TOKENS (128) after one warm-up.
#
#   bench/layer-tax.sh        # prints a table of medians
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${AIAAS_CACHE:-$HOME/.cache/aiaas}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
MODEL=${MODEL:-$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf}
REPS=${REPS:-5}
CONCURRENCY=${CONCURRENCY:-1}
REQUESTS=${REQUESTS:-4}
MAX_TOKENS=${MAX_TOKENS:-128}
[ -f "$MODEL" ] || scripts/fetch-demo-models.sh
BIN=$CARGO_TARGET_DIR/debug
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
OPT=()
for crate in aiaas-server aiaas-admin aiaas-engine aiaas-migrations; do
  OPT+=(--config "profile.dev.package.$crate.opt-level=3")
done
cargo build -q --locked --workspace --bin aiaas "${OPT[@]}"
cp "$BIN/aiaas" "$WORK/aiaas-opt"
cargo build -q --locked --workspace --all-targets   # the test build's binary back, and the tools

start() { # label port [env...]
  local label=$1 port=$2; shift 2
  mkdir -p "$WORK/$label"
  env AIAAS__LEDGER__JOURNAL_DIR="$WORK/$label/journal" "$@" "$WORK/aiaas-opt" serve \
    --bind 127.0.0.1:"$port" --model bench="$MODEL" --database-url "sqlite://$WORK/$label/aiaas.db" \
    >"$WORK/$label/out" 2>"$WORK/$label/log" &
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "$label never became ready" >&2; return 1
}
start full 18401
start auth+limits 18402 AIAAS__LEDGER__ENABLED=false
start bare 18403 AIAAS__AUTH__ENABLED=false AIAAS__LEDGER__ENABLED=false
for label in full auth+limits; do
  "$WORK/aiaas-opt" tenant set-limits default --rpm 1000000 --tpm 1000000000 \
    --database-url "sqlite://$WORK/$label/aiaas.db" >/dev/null
done
sleep 1
declare -A PORT=([full]=18401 [auth+limits]=18402 [bare]=18403)
for rep in $(seq 1 "$REPS"); do
  for label in full auth+limits bare; do
    key=$(grep -m1 '^sk-aiaas-' "$WORK/$label/out" || echo unused)
    "$BIN/aiaas-load" --url "http://127.0.0.1:${PORT[$label]}/v1" --model bench --api-key "$key" \
      --label "$label" --rep "$rep" --concurrency "$CONCURRENCY" --requests "$REQUESTS" \
      --max-tokens "$MAX_TOKENS" --prompt-words 86 --warmup 1 --json 2>>"$WORK/raw.jsonl" >/dev/null
  done
done
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(basename "$MODEL"), medians of $REPS:"
"$BIN/aiaas-report" "$WORK/raw.jsonl" --only-table
