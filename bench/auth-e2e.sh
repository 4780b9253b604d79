#!/usr/bin/env bash
# End-to-end cost of authentication: requests/s of 1-token streaming chat completions against
# the same aiaas binary and model with auth on (an API key, then a minted JWT) and off
# (`AIAAS__AUTH__ENABLED=false`), one after the other in one run.
#
#   bench/auth-e2e.sh        # tiny-qwen3 from the test fixtures (model time small, auth visible)
#
# Environment: MODEL_DIR (default: the tiny test model), CONCURRENCY (default 1,4,16),
# REQUESTS (per level, default 400), ROUNDS (default 3; the table keeps every round).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${AIAAS_CACHE:-$HOME/.cache/aiaas}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
MODELS=${AIAAS_TEST_MODELS:-$CACHE/tiny-models}
MODEL_DIR=${MODEL_DIR:-$MODELS/tiny-qwen3}
CONCURRENCY=${CONCURRENCY:-1,4,16}
REQUESTS=${REQUESTS:-400}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
[ -d "$MODEL_DIR" ] || "${AIAAS_PYTHON:-$CACHE/venv/bin/python}" tests/fixtures/make_models.py "$MODELS"
cargo build -q --workspace --all-targets --locked
AIAAS=$CARGO_TARGET_DIR/debug/aiaas
LOAD=$CARGO_TARGET_DIR/debug/aiaas-load
PORT=18183
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT

start() { # env assignments...
  DB=$(mktemp -d)/aiaas.db
  env "$@" "$AIAAS" serve --bind 127.0.0.1:$PORT --model bench="$MODEL_DIR" --database-url "sqlite://$DB" \
    >"$OUT/auth-e2e.out" 2>"$OUT/auth-e2e.log" &
  pid=$!
  for _ in $(seq 1 600); do curl -sf http://127.0.0.1:$PORT/ready >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "aiaas did not start" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
load() { # label key
  "$LOAD" --url http://127.0.0.1:$PORT/v1 --model bench --label "$1" --api-key "$2" \
    --concurrency "$CONCURRENCY" --requests "$REQUESTS" --max-tokens 1 --prompt-words 4 --warmup 20 | tail -n +3
}

{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cores, model $(basename "$MODEL_DIR"), max_tokens 1, $REQUESTS requests per level"
  echo "| server | conc | reqs | err | req/s | out tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | latency p50 ms |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for round in $(seq 1 "$ROUNDS"); do
    start AIAAS__AUTH__ENABLED=true
    KEY=$(grep -m1 '^sk-aiaas-' "$OUT/auth-e2e.out")
    ID=$(echo "$KEY" | cut -d- -f3)
    TOKEN=$("$AIAAS" key token "$ID" --ttl 1h --database-url "sqlite://$DB" | tail -1)
    load "r$round auth=api-key" "$KEY"
    load "r$round auth=jwt" "$TOKEN"
    stop
    start AIAAS__AUTH__ENABLED=false
    load "r$round auth=off" unused
    stop
  done
} | tee "$OUT/auth-e2e.md"
