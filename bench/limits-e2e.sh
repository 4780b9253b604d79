#!/usr/bin/env bash
# End-to-end cost of admission: requests/s of 1-token streaming chat completions with and
# without limits, side by side. Two servers from the same binary and model: one with in-process
# limits, one sharing them through Redis (a redis-server of its own on a free port). Each has two
# keys: one with no limits and no budget (off), one with requests/tokens/concurrency limits far
# above the load and a tenant budget (on: every request takes the limiter and a budget
# reservation + settlement in SQLite). Loads rotate order round after round.
#
#   bench/limits-e2e.sh
#
# Environment: MODEL_DIR (default: the tiny test model), CONCURRENCY (default 1,4,16),
# REQUESTS (per level, default 300), ROUNDS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${AIAAS_CACHE:-$HOME/.cache/aiaas}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
MODELS=${AIAAS_TEST_MODELS:-$CACHE/tiny-models}
MODEL_DIR=${MODEL_DIR:-$MODELS/tiny-qwen3}
CONCURRENCY=${CONCURRENCY:-1,4,16}
REQUESTS=${REQUESTS:-300}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
[ -d "$MODEL_DIR" ] || "${AIAAS_PYTHON:-$CACHE/venv/bin/python}" tests/fixtures/make_models.py "$MODELS"
cargo build -q --workspace --all-targets --locked
AIAAS=$CARGO_TARGET_DIR/debug/aiaas
LOAD=$CARGO_TARGET_DIR/debug/aiaas-load
LOCAL=18185
SHARED=18186
REDIS_PORT=18187
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no >"$OUT/limits-e2e-redis.log" 2>&1 &
pids+=($!)

start() { # port name env...
  local port=$1 name=$2
  shift 2
  local db
  db=$(mktemp -d)/aiaas.db
  echo "sqlite://$db" >"$OUT/limits-e2e-$name.db"
  env AIAAS__LEDGER__JOURNAL_DIR="$(dirname "$db")/journal" "$@" "$AIAAS" serve --bind 127.0.0.1:"$port" --model bench="$MODEL_DIR" --database-url "sqlite://$db" \
    >"$OUT/limits-e2e-$name.out" 2>"$OUT/limits-e2e-$name.log" &
  pids+=($!)
}
ready() { # port
  for _ in $(seq 1 600); do curl -sf http://127.0.0.1:"$1"/ready >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "aiaas on port $1 did not start" >&2; exit 1
}
limited_key() { # name -> a key with generous limits, under a tenant with a budget
  local db
  db=$(cat "$OUT/limits-e2e-$1.db")
  "$AIAAS" tenant create limited --database-url "$db" >/dev/null
  "$AIAAS" budget set --tenant limited --tokens 1000000000000 --database-url "$db" >/dev/null
  "$AIAAS" key create --tenant limited --rpm 10000000 --tpm 1000000000 --max-concurrent 10000 \
    --database-url "$db" 2>/dev/null | tail -1
}
load() { # label port key
  "$LOAD" --url http://127.0.0.1:"$2"/v1 --model bench --label "$1" --api-key "$3" \
    --concurrency "$CONCURRENCY" --requests "$REQUESTS" --max-tokens 1 --prompt-words 4 --warmup 20 | tail -n +3
}

start $LOCAL local
start $SHARED shared AIAAS__LIMITS__REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
ready $LOCAL
ready $SHARED
curl -s http://127.0.0.1:$SHARED/ready | grep -q '"limits":"redis"' || { echo "shared server is not on Redis" >&2; exit 1; }
LOCAL_OFF=$(grep -m1 '^sk-aiaas-' "$OUT/limits-e2e-local.out")
SHARED_OFF=$(grep -m1 '^sk-aiaas-' "$OUT/limits-e2e-shared.out")
LOCAL_ON=$(limited_key local)
SHARED_ON=$(limited_key shared)
sleep 1 # the policy cache picks up the new tenant's budget

{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cores, model $(basename "$MODEL_DIR"), max_tokens 1, $REQUESTS requests per level"
  echo "| server | conc | reqs | err | req/s | out tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | latency p50 ms |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for round in $(seq 1 "$ROUNDS"); do
    runs=("limits=off local|$LOCAL|$LOCAL_OFF" "limits=on local|$LOCAL|$LOCAL_ON"
          "limits=off redis|$SHARED|$SHARED_OFF" "limits=on redis|$SHARED|$SHARED_ON")
    for i in 0 1 2 3; do
      IFS='|' read -r label port key <<<"${runs[$(((i + round) % 4))]}"
      load "r$round $label" "$port" "$key"
    done
  done
} | tee "$OUT/limits-e2e.md"

python3 - "$OUT/limits-e2e.md" <<'PY' | tee -a "$OUT/limits-e2e.md"
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 11 and cells[0].startswith("r") and "limits=" in cells[0]:
        label = " ".join(cells[0].split()[1:])
        rows[(label, int(cells[1]))].append((float(cells[4]), float(cells[10]), int(cells[3])))
print("\n| limits | conc | rounds | errors | median req/s | ratio on/off (same server) | median latency p50 ms |\n|---|---|---|---|---|---|---|")
for (label, conc), values in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    backend = label.split()[1]
    off = statistics.median(v[0] for v in rows[(f"limits=off {backend}", conc)])
    med = statistics.median(v[0] for v in values)
    lat = statistics.median(v[1] for v in values)
    errors = sum(v[2] for v in values)
    print(f"| {label} | {conc} | {len(values)} | {errors} | {med:.1f} | {med / off:.3f} | {lat:.0f} |")
PY
