#!/usr/bin/env bash
# Two aiaas binaries side by side on the demo GGUF, e.g. before and after a change to the
# engine or to a vendored crate: both serve at once (auth, limits and ledger off), and each
# repetition runs A then B through every concurrency level, so drift of the machine falls on
# both. Build the baseline first and keep it aside, e.g.
#   git stash && cargo build --workspace --bin aiaas && cp "$CARGO_TARGET_DIR/debug/aiaas" /tmp/aiaas-a
#   git stash pop && A=/tmp/aiaas-a bench/ab.sh
# Environment: A (required), B (default: the current test build), CONCURRENCY (1,8), REPS (3),
# REQUESTS (max(concurrency, 4) per level), MAX_TOKENS (128), PROMPT_WORDS (86), PROMPT_SPREAD
# (0: every prompt the same length; N: request i adds i % (N + 1) words), STAGGER_MS (0: the
# concurrent clients start together; N: client k starts k * N ms after the first), MODEL, RAW
# (a file to keep every repetition's figures in, as JSON lines).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${AIAAS_CACHE:-$HOME/.cache/aiaas}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
BIN=$CARGO_TARGET_DIR/debug
A=${A:?set A to the baseline aiaas binary}
B=${B:-$BIN/aiaas}
MODEL=${MODEL:-$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf}
CONCURRENCY=${CONCURRENCY:-1,8}
REPS=${REPS:-3}
REQUESTS=${REQUESTS:-4}
MAX_TOKENS=${MAX_TOKENS:-128}
PROMPT_WORDS=${PROMPT_WORDS:-86}
PROMPT_SPREAD=${PROMPT_SPREAD:-0}
STAGGER_MS=${STAGGER_MS:-0}
[ -f "$MODEL" ] || scripts/fetch-demo-models.sh
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
declare -A BINARY=([A]=$A [B]=$B) PORT=([A]=18501 [B]=18502)
for label in A B; do
  mkdir -p "$WORK/$label"
  AIAAS__AUTH__ENABLED=false AIAAS__LEDGER__ENABLED=false \
    AIAAS__LEDGER__JOURNAL_DIR="$WORK/$label/journal" "${BINARY[$label]}" serve \
    --bind 127.0.0.1:"${PORT[$label]}" --model bench="$MODEL" \
    --database-url "sqlite://$WORK/$label/aiaas.db" >"$WORK/$label/out" 2>"$WORK/$label/log" &
done
for label in A B; do
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:${PORT[$label]}/ready" >/dev/null 2>&1 && continue 2
    sleep 0.2
  done
  echo "$label never became ready:" >&2; tail -5 "$WORK/$label/log" >&2; exit 1
done
for rep in $(seq 1 "$REPS"); do
  for label in A B; do
    "$BIN/aiaas-load" --url "http://127.0.0.1:${PORT[$label]}/v1" --model bench --label "$label" \
      --rep "$rep" --concurrency "$CONCURRENCY" --requests "$REQUESTS" --max-tokens "$MAX_TOKENS" \
      --prompt-words "$PROMPT_WORDS" --prompt-spread "$PROMPT_SPREAD" --stagger-ms "$STAGGER_MS" --warmup 1 --json 2>>"$WORK/raw.jsonl" >/dev/null
  done
done
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(basename "$MODEL"), A=$A, B=$B, medians of $REPS:"
"$BIN/aiaas-report" "$WORK/raw.jsonl" --only-table
if [ -n "${RAW:-}" ]; then cp "$WORK/raw.jsonl" "$RAW"; fi
