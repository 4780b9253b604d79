#!/usr/bin/env bash
# The CPU knob table: aiaas with auth, limits and ledger off (the engine's own speed), one
# variant at a time, at concurrency 1 and 8, same prompts as bench/compare.sh.
#   - the GGUF quantisation of the same weights (Q4_1 as shipped; Q4_0 and Q8_0 re-quantised
#     from it with bench/requant.py);
#   - engine threads (RAYON_NUM_THREADS sizes rayon's pools, the engine's own included;
#     rayon does not pin its threads, and neither library offers a setting that would);
#   - the engine thread in a rayon pool of its own (vendor/mistralrs-core) or as upstream has it;
#   - the continuous-batching width (engine.max_running_sequences).
#
#   bench/knobs.sh      # writes $OUT/knobs.md (default bench/results)
#
# Environment: MODEL, REPS (default 1), MAX_TOKENS (128), PROMPT_WORDS (86), CONCURRENCY (1,8).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${AIAAS_CACHE:-$HOME/.cache/aiaas}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
MODEL=${MODEL:-$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf}
REPS=${REPS:-1}
MAX_TOKENS=${MAX_TOKENS:-128}
PROMPT_WORDS=${PROMPT_WORDS:-86}
CONCURRENCY=${CONCURRENCY:-1,8}
PYTHON=${AIAAS_PYTHON:-$CACHE/venv/bin/python}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
[ -f "$MODEL" ] || scripts/fetch-demo-models.sh
cargo build -q --workspace --all-targets --locked
BIN=$CARGO_TARGET_DIR/debug
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
RAW=$OUT/knobs.jsonl
: >"$RAW"

for q in Q4_0 Q8_0; do
  "$PYTHON" bench/requant.py "$MODEL" "$WORK/model.$q.gguf" "$q" >/dev/null
done

variant() { # label model [env...]
  local label=$1 model=$2; shift 2
  rm -rf "$WORK/run"; mkdir -p "$WORK/run"
  env AIAAS__AUTH__ENABLED=false AIAAS__LEDGER__ENABLED=false \
    AIAAS__LEDGER__JOURNAL_DIR="$WORK/run/journal" "$@" "$BIN/aiaas" serve \
    --bind 127.0.0.1:18190 --model bench="$model" --database-url "sqlite://$WORK/run/aiaas.db" \
    >/dev/null 2>"$WORK/run/log" &
  local pid=$!
  for _ in $(seq 1 600); do curl -sf http://127.0.0.1:18190/ready >/dev/null 2>&1 && break; sleep 0.2; done
  for rep in $(seq 1 "$REPS"); do
    "$BIN/aiaas-load" --url http://127.0.0.1:18190/v1 --model bench --label "$label" --rep "$rep" \
      --concurrency "$CONCURRENCY" --requests 4 --max-tokens "$MAX_TOKENS" \
      --prompt-words "$PROMPT_WORDS" --warmup 1 --json 2>>"$RAW" >/dev/null
  done
  awk -v s="$label" '/^VmHWM/ {printf "{\"rss\":\"%s\",\"rss_kib\":0,\"hwm_kib\":%d}\n", s, $2}' \
    "/proc/$pid/status" >>"$RAW"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "done: $label" >&2
}

variant "Q4_1, 2 threads (default)" "$MODEL"
variant "Q4_1, upstream engine threading (AIAAS_ENGINE_POOL=off)" "$MODEL" AIAAS_ENGINE_POOL=off
variant "Q4_1, 1 thread" "$MODEL" RAYON_NUM_THREADS=1
variant "Q4_1, max_running_sequences 4" "$MODEL" AIAAS__ENGINE__MAX_RUNNING_SEQUENCES=4
variant "Q4_0 (re-quantised)" "$WORK/model.Q4_0.gguf"
variant "Q8_0 (re-quantised)" "$WORK/model.Q8_0.gguf"

{
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(basename "$MODEL") and re-quantisations,"
  echo "$PROMPT_WORDS prompt words, max_tokens $MAX_TOKENS, medians of $REPS, aiaas with auth/limits/ledger off."
  echo
  "$BIN/aiaas-report" "$RAW" --only-table
} | tee "$OUT/knobs.md"
