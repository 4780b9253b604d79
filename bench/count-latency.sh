#!/usr/bin/env bash
# How long counting a prompt's tokens takes while the engine is busy: admission counts every
# generation's prompt where a token limit or budget applies, with the same code as `POST
# /tokenize`. This times PROBES calls of `/tokenize` on a chat (HTTP included) while LOAD
# streams of 2000 tokens decode on the same server (0: an idle engine), for binaries A and B in
# turn, REPS times, each run on a fresh server (auth, limits and ledger off), and prints the
# median and 90th percentile of each run in milliseconds. Build the baseline first and keep it
# aside, as for ab.sh.
#
#   A=/tmp/aiaas-a bench/count-latency.sh            # B: the current test build
#   A=/tmp/aiaas-a LOAD=0,4,8 REPS=3 bench/count-latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${AIAAS_CACHE:-$HOME/.cache/aiaas}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
BIN=$CARGO_TARGET_DIR/debug
A=${A:?set A to the baseline aiaas binary}
B=${B:-$BIN/aiaas}
MODEL=${MODEL:-$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf}
LOAD=${LOAD:-0,4,8}
REPS=${REPS:-2}
PROBES=${PROBES:-60}
PORT=18511
[ -f "$MODEL" ] || scripts/fetch-demo-models.sh
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
declare -A BINARY=([A]=$A [B]=$B)
BODY='{"model": "bench", "messages": [{"role": "system", "content": "You are a helpful assistant."},
  {"role": "user", "content": "Write a short story about a lighthouse keeper who finds a message in a bottle, in about one hundred words, please."}]}'

probe() { # label load: one fresh server, LOAD streams, PROBES timed calls
  local label=$1 load=$2 dir=$WORK/$1-$2-$rep
  mkdir -p "$dir"
  AIAAS__AUTH__ENABLED=false AIAAS__LEDGER__ENABLED=false AIAAS__LEDGER__JOURNAL_DIR="$dir/journal" \
    "${BINARY[$label]}" serve --bind 127.0.0.1:$PORT --model bench="$MODEL" \
    --database-url "sqlite://$dir/aiaas.db" >/dev/null 2>"$dir/log" &
  local server=$! stream=
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break; sleep 0.2; done
  if [ "$load" -gt 0 ]; then
    "$BIN/aiaas-load" --url "http://127.0.0.1:$PORT/v1" --model bench --concurrency "$load" \
      --requests "$load" --max-tokens 2000 --prompt-words 86 --warmup 0 >/dev/null 2>&1 &
    stream=$!
    sleep 2 # the prompts prefilled: the engine is decoding
  fi
  for _ in $(seq 1 "$PROBES"); do
    curl -sf -o /dev/null -w '%{time_total}\n' -H 'content-type: application/json' \
      -d "$BODY" "http://127.0.0.1:$PORT/tokenize"
    # Calls at random points of the engine's steps.
    sleep "0.0$((RANDOM % 9 + 1))"
  done | sort -n | awk -v l="$label" -v n="$load" -v r="$rep" \
    '{a[NR] = $1 * 1000} END {printf "| %s | %d | %d | %.2f | %.2f |\n", l, n, r, a[int((NR + 1) / 2)], a[int(NR * 0.9)]}'
  kill $stream $server 2>/dev/null || true
  wait $server 2>/dev/null || true
}

echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(basename "$MODEL"), A=$A, B=$B:"
echo "| binary | streams decoding | rep | /tokenize p50 ms | p90 ms |"
echo "|---|---:|---:|---:|---:|"
for load in ${LOAD//,/ }; do
  for rep in $(seq 1 "$REPS"); do
    for label in A B; do
      probe "$label" "$load"
    done
  done
done
