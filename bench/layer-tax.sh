#!/usr/bin/env bash
# The serving layer's own cost, without the rest of compare.sh's set-up: the same optimised
# binary as three servers on the demo GGUF (no embedding model), alternating, REPS times:
#   full          API key auth, a tenant rpm + tpm limit, the usage ledger on SQLite
#   auth+limits   the same with the ledger off
#   bare          auth, limits and ledger off
# at CONCURRENCY (default 1), REQUESTS requests of MAX_TOKENS (128) after one warm-up, the
# concurrent clients starting STAGGER_MS (default 0) apart, so that with STAGGER_MS > 0 requests
# arrive while others decode, as real traffic does. The servers are started afresh for each
# repetition, in turn, and it begins with the next variant.
# Besides the load generator's table it prints each server's CPU time per request.
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
STAGGER_MS=${STAGGER_MS:-0}
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

start() { # dir label port [env...]
  local dir=$1 label=$2 port=$3; shift 3
  mkdir -p "$dir/$label"
  env AIAAS__LEDGER__JOURNAL_DIR="$dir/$label/journal" "$@" "$WORK/aiaas-opt" serve \
    --bind 127.0.0.1:"$port" --model bench="$MODEL" --database-url "sqlite://$dir/$label/aiaas.db" \
    >"$dir/$label/out" 2>"$dir/$label/log" &
  PID[$label]=$!
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "$label never became ready" >&2; return 1
}
cpu_ticks() { # pid: user + system time so far, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}
LABELS=(full auth+limits bare)
declare -A PORT=([full]=18401 [auth+limits]=18402 [bare]=18403) PID=()
# Fresh servers every repetition, and each repetition starts with the next variant: what one
# process happens to get (where its pages lie, which core its threads settle on) then spreads
# over all three variants instead of following one of them through the whole run.
for rep in $(seq 1 "$REPS"); do
  dir=$WORK/rep$rep
  # The servers start in the same rotation as the runs below, so that whatever the order of
  # start does (which process loads the model first, where its memory lies) falls on each
  # variant in turn; before, `full` always started first.
  for i in 0 1 2; do
    label=${LABELS[$(((rep - 1 + i) % 3))]}
    case $label in
      full) start "$dir" full "${PORT[full]}" ;;
      auth+limits) start "$dir" auth+limits "${PORT[auth+limits]}" AIAAS__LEDGER__ENABLED=false ;;
      bare) start "$dir" bare "${PORT[bare]}" AIAAS__AUTH__ENABLED=false AIAAS__LEDGER__ENABLED=false ;;
    esac
  done
  for label in full auth+limits; do
    "$WORK/aiaas-opt" tenant set-limits default --rpm 1000000 --tpm 1000000000 \
      --database-url "sqlite://$dir/$label/aiaas.db" >/dev/null
  done
  sleep 1
  for i in 0 1 2; do
    label=${LABELS[$(((rep - 1 + i) % 3))]}
    key=$(grep -m1 '^sk-aiaas-' "$dir/$label/out" || echo unused)
    before=$(cpu_ticks "${PID[$label]}")
    "$BIN/aiaas-load" --url "http://127.0.0.1:${PORT[$label]}/v1" --model bench --api-key "$key" \
      --label "$label" --rep "$rep" --concurrency "$CONCURRENCY" --requests "$REQUESTS" \
      --max-tokens "$MAX_TOKENS" --prompt-words 86 --stagger-ms "$STAGGER_MS" --warmup 1 --json 2>>"$WORK/raw.jsonl" >/dev/null
    # The server's CPU time over the run, the writer's batches included (it flushes within
    # ledger.flush_interval_ms of each request, before the next variant starts).
    sleep 0.3
    echo "$label $(($(cpu_ticks "${PID[$label]}") - before))" >>"$WORK/cpu.txt"
  done
  kill "${PID[@]}" 2>/dev/null || true
  wait "${PID[@]}" 2>/dev/null || true
done
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(basename "$MODEL"), medians of $REPS:"
"$BIN/aiaas-report" "$WORK/raw.jsonl" --only-table
# CPU time of the server per request (warm-up included), median over the repetitions.
ticks=$(getconf CLK_TCK)
echo
echo "| server | CPU ms per request (median of $REPS) |"
echo "|---|---:|"
for label in "${LABELS[@]}"; do
  awk -v l="$label" '$1 == l {print $2}' "$WORK/cpu.txt" | sort -n |
    awk -v l="$label" -v t="$ticks" -v n="$((REQUESTS + 1))" \
      '{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
        printf "| %s | %.1f |\n", l, m * 1000 / t / n}'
done
