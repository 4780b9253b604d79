#!/usr/bin/env bash
# End-to-end cost of authentication: requests/s of 1-token streaming chat completions against
# two aiaas servers started side by side from the same binary and model, one with auth on (called
# with an API key, then with a minted JWT) and one with auth off (`AIAAS__AUTH__ENABLED=false`).
# Loads alternate between them round after round, so drift on a shared machine hits both sides.
#
#   bench/auth-e2e.sh        # tiny-qwen3 from the test fixtures (model time small, auth visible)
#
# Environment: MODEL_DIR (default: the tiny test model), CONCURRENCY (default 1,4,16),
# REQUESTS (per level, default 400), ROUNDS (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${AIAAS_CACHE:-$HOME/.cache/aiaas}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
MODELS=${AIAAS_TEST_MODELS:-$CACHE/tiny-models}
MODEL_DIR=${MODEL_DIR:-$MODELS/tiny-qwen3}
CONCURRENCY=${CONCURRENCY:-1,4,16}
REQUESTS=${REQUESTS:-400}
ROUNDS=${ROUNDS:-5}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
[ -d "$MODEL_DIR" ] || "${AIAAS_PYTHON:-$CACHE/venv/bin/python}" tests/fixtures/make_models.py "$MODELS"
cargo build -q --workspace --all-targets --locked
AIAAS=$CARGO_TARGET_DIR/debug/aiaas
LOAD=$CARGO_TARGET_DIR/debug/aiaas-load
ON=18183
OFF=18184
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start() { # port name env...
  local port=$1 name=$2
  shift 2
  local db
  db=$(mktemp -d)/aiaas.db
  echo "sqlite://$db" >"$OUT/auth-e2e-$name.db"
  env AIAAS__LEDGER__JOURNAL_DIR="$(dirname "$db")/journal" "$@" "$AIAAS" serve --bind 127.0.0.1:"$port" --model bench="$MODEL_DIR" --database-url "sqlite://$db" \
    >"$OUT/auth-e2e-$name.out" 2>"$OUT/auth-e2e-$name.log" &
  pids+=($!)
}
ready() { # port
  for _ in $(seq 1 600); do curl -sf http://127.0.0.1:"$1"/ready >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "aiaas on port $1 did not start" >&2; exit 1
}
load() { # label port key
  "$LOAD" --url http://127.0.0.1:"$2"/v1 --model bench --label "$1" --api-key "$3" \
    --concurrency "$CONCURRENCY" --requests "$REQUESTS" --max-tokens 1 --prompt-words 4 --warmup 20 | tail -n +3
}

start $ON on AIAAS__AUTH__ENABLED=true
start $OFF off AIAAS__AUTH__ENABLED=false
ready $ON
ready $OFF
KEY=$(grep -m1 '^sk-aiaas-' "$OUT/auth-e2e-on.out")
ID=$(echo "$KEY" | cut -d- -f3)
TOKEN=$("$AIAAS" key token "$ID" --ttl 2h --database-url "$(cat "$OUT/auth-e2e-on.db")" | tail -1)

{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cores, model $(basename "$MODEL_DIR"), max_tokens 1, $REQUESTS requests per level"
  echo "| server | conc | reqs | err | req/s | out tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | latency p50 ms |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for round in $(seq 1 "$ROUNDS"); do
    # Rotate the order each round.
    case $((round % 3)) in
      1) load "r$round auth=off" $OFF unused; load "r$round auth=api-key" $ON "$KEY"; load "r$round auth=jwt" $ON "$TOKEN" ;;
      2) load "r$round auth=api-key" $ON "$KEY"; load "r$round auth=jwt" $ON "$TOKEN"; load "r$round auth=off" $OFF unused ;;
      0) load "r$round auth=jwt" $ON "$TOKEN"; load "r$round auth=off" $OFF unused; load "r$round auth=api-key" $ON "$KEY" ;;
    esac
  done
} | tee "$OUT/auth-e2e.md"

# Medians over rounds, and the ratio to auth=off at the same concurrency.
python3 - "$OUT/auth-e2e.md" <<'PY' | tee -a "$OUT/auth-e2e.md"
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 11 and cells[0].startswith("r") and "auth=" in cells[0]:
        rows[(cells[0].split()[1], int(cells[1]))].append((float(cells[4]), float(cells[10])))
print("\n| auth | conc | rounds | median req/s | ratio to off | median of latency p50 ms |\n|---|---|---|---|---|---|")
for (auth, conc), values in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    off = statistics.median(v[0] for v in rows[("auth=off", conc)])
    med = statistics.median(v[0] for v in values)
    lat = statistics.median(v[1] for v in values)
    print(f"| {auth} | {conc} | {len(values)} | {med:.1f} | {med / off:.3f} | {lat:.0f} |")
PY
