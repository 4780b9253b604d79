#!/usr/bin/env bash
# GPU serving benchmark: aiaas (CUDA build) on a random-weight model of a real shape, with and
# without paged attention, at concurrency 1, 8, 32, 128; 128-token outputs, temperature 0.
# Output tokens/s, TTFT and ITL p50/p99, and the peaks of KV-cache use and of the engine's running
# and waiting sequences (sampled from /metrics). Results: $OUT/gpu.md, $OUT/raw.jsonl, the
# servers' /ready answers and logs.
#
# On a GPU host with this checkout and a CUDA build (scripts/build-cuda.sh):
#   bench/gpu.sh
# On a lent GPU machine without a Rust toolchain, carry the two binaries and point at them:
#   AIAAS=./aiaas LOAD=./aiaas-load bench/gpu.sh
# Environment: SHAPE (qwen3-0.6b; see bench/gpu-model.py), MODEL_DIR (made if missing),
# CONCURRENCY (1,8,32,128), MAX_TOKENS (128), PROMPT_WORDS (100), MIN_REQUESTS (16: requests per
# level are max(2 x concurrency, MIN_REQUESTS)), MODES (paged,unpaged), MAX_SEQS (128), OUT,
# PYTHON (one with numpy and tokenizers, for gpu-model.py).
# Also runs on CPU (SHAPE=tiny, a CPU build) to check the script itself: paged attention is then
# off in both modes, and /ready says so.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${AIAAS_CACHE:-$HOME/.cache/aiaas}
AIAAS=${AIAAS:-target/release/aiaas}
LOAD=${LOAD:-${CARGO_TARGET_DIR:-$CACHE/target}/debug/aiaas-load}
SHAPE=${SHAPE:-qwen3-0.6b}
MODEL_DIR=${MODEL_DIR:-$CACHE/gpu-models/$SHAPE}
CONCURRENCY=${CONCURRENCY:-1,8,32,128}
MAX_TOKENS=${MAX_TOKENS:-128}
PROMPT_WORDS=${PROMPT_WORDS:-100}
MIN_REQUESTS=${MIN_REQUESTS:-16}
MODES=${MODES:-paged,unpaged}
MAX_SEQS=${MAX_SEQS:-128}
PORT=${PORT:-18190}
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
for bin in "$AIAAS" "$LOAD"; do
  [ -x "$bin" ] || { echo "gpu.sh: no executable $bin (see the header)" >&2; exit 1; }
done
[ -f "$MODEL_DIR/model.safetensors" ] || "${PYTHON:-python3}" bench/gpu-model.py "$MODEL_DIR" --shape "$SHAPE"

WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
RAW=$OUT/raw.jsonl
: >"$RAW"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader >"$OUT/gpu.txt" || echo "no GPU" >"$OUT/gpu.txt"

IFS=, read -ra LEVELS <<<"$CONCURRENCY"
IFS=, read -ra MODE_LIST <<<"$MODES"
for mode in "${MODE_LIST[@]}"; do
  case $mode in
    paged) paged=true ;;
    unpaged) paged=false ;;
    *) echo "gpu.sh: unknown mode $mode (paged, unpaged)" >&2; exit 1 ;;
  esac
  mkdir -p "$WORK/$mode"
  # Auth and the ledger stay on, as in production; the key is the one printed at first start.
  env AIAAS__ENGINE__PAGED_ATTENTION__ENABLED=$paged AIAAS__ENGINE__MAX_RUNNING_SEQUENCES="$MAX_SEQS" \
    AIAAS__ENGINE__MAX_QUEUED_REQUESTS=$((MAX_SEQS * 4)) \
    AIAAS__LEDGER__JOURNAL_DIR="$WORK/$mode/journal" \
    "$AIAAS" serve --bind 127.0.0.1:"$PORT" --model bench="$MODEL_DIR" \
    --database-url "sqlite://$WORK/$mode/aiaas.db" >"$OUT/$mode.out" 2>"$OUT/$mode.log" &
  PID=$!
  for _ in $(seq 1 1800); do
    curl -sf "http://127.0.0.1:$PORT/ready" >"$OUT/ready-$mode.json" 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || { echo "gpu.sh: the $mode server exited (see $OUT/$mode.log)" >&2; exit 1; }
    sleep 0.5
  done
  [ -s "$OUT/ready-$mode.json" ] || { echo "gpu.sh: the $mode server never became ready" >&2; exit 1; }
  key=$(grep -m1 '^sk-aiaas-' "$OUT/$mode.out")
  echo "$mode: $(cat "$OUT/ready-$mode.json")"
  for c in "${LEVELS[@]}"; do
    requests=$((2 * c > MIN_REQUESTS ? 2 * c : MIN_REQUESTS))
    "$LOAD" --url "http://127.0.0.1:$PORT/v1" --model bench --api-key "$key" --label "aiaas-$mode" \
      --concurrency "$c" --requests "$requests" --max-tokens "$MAX_TOKENS" \
      --prompt-words "$PROMPT_WORDS" --warmup 2 --json \
      --metrics-url "http://127.0.0.1:$PORT/metrics" 2>>"$RAW" | tail -n +3
  done
  curl -sf "http://127.0.0.1:$PORT/metrics" >"$OUT/metrics-$mode.txt" || true
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
done

{
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(cat "$OUT/gpu.txt"), model $SHAPE (random weights, bf16),"
  echo "$PROMPT_WORDS prompt words, max_tokens $MAX_TOKENS, temperature 0, max $MAX_SEQS running sequences."
  echo
  echo "| mode | conc | reqs | err | out tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | KV cache peak | running peak | waiting peak |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  python3 - "$RAW" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    kv = r.get("kv_cache_peak")
    kv = "-" if kv is None else f"{100 * kv:.1f}%"
    peak = lambda k: "-" if r.get(k) is None else f"{r[k]:.0f}"
    print(f"| {r['label']} | {r['concurrency']} | {r['requests']} | {r['errors']} | "
          f"{r['output_tokens_per_s']:.1f} | {r['ttft_p50_ms']:.1f} | {r['ttft_p99_ms']:.1f} | "
          f"{r['itl_p50_ms']:.1f} | {r['itl_p99_ms']:.1f} | {kv} | {peak('running_peak')} | {peak('waiting_peak')} |")
PY
} | tee "$OUT/gpu.md"
