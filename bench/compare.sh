#!/usr/bin/env bash
# Side-by-side streaming benchmark on one GGUF file, same machine, same prompts, one run:
#   aiaas        auth (API key), rate limits (a tenant rpm + tpm limit) and the usage ledger on
#   aiaas-bare   the same binary with auth, limits and ledger off (the layer's own cost)
#   mistralrs-server   mistral.rs's own server (`mistralrs-cli` 0.8.1 from crates.io)
#   llama.cpp    llama.cpp through PyPI's `llama-cpp-python[server]` (AVX2 build)
#   aiaas-pool-off   (only when named in SERVERS) aiaas-bare with AIAAS_ENGINE_POOL=off: the engine
#                thread outside any rayon pool, as upstream mistral.rs has it (vendor/mistralrs-core)
# All four servers run at once (idle ones sleep), started afresh for each repetition; each
# repetition runs every server through every concurrency level in turn, starting from the next
# server each time, so slow drift of the machine spreads over all of them. A STREAM-like
# bandwidth probe runs before and after. Results: $OUT/table.md, $OUT/chart.svg, $OUT/raw.jsonl.
#
#   bench/install-peers.sh           # once: builds the two peers into ~/.cache/aiaas/peers
#   bench/compare.sh                 # models/SmolLM2-135M-Instruct.Q4_1.gguf (fetched if missing)
#   SERVERS=aiaas,aiaas-bare bench/compare.sh    # a subset
#
# Environment: MODEL (GGUF path), SERVERS, CONCURRENCY (default 1,2,4,8,16), REPS (3),
# MAX_TOKENS (128), PROMPT_WORDS (86: ~128 prompt tokens with SmolLM2's chat template),
# MIN_REQUESTS (4: requests per level are max(concurrency, MIN_REQUESTS)), THREADS (2),
# STAGGER_MS (0: a level's clients start together; N: client k starts k * N ms after the first,
# so that their sequences are not in lockstep, as real traffic's are not; see aiaas-load).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${AIAAS_CACHE:-$HOME/.cache/aiaas}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
MODEL=${MODEL:-$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf}
EMBEDDER=${EMBEDDER:-$PWD/models/all-MiniLM-L6-v2}
SERVERS=${SERVERS:-aiaas,aiaas-bare,mistralrs-server,llama.cpp}
CONCURRENCY=${CONCURRENCY:-1,2,4,8,16}
REPS=${REPS:-3}
MAX_TOKENS=${MAX_TOKENS:-128}
PROMPT_WORDS=${PROMPT_WORDS:-86}
MIN_REQUESTS=${MIN_REQUESTS:-4}
THREADS=${THREADS:-2}
STAGGER_MS=${STAGGER_MS:-0}
PEERS=$CACHE/peers
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
[ -f "$MODEL" ] || scripts/fetch-demo-models.sh

# The serving layer is measured optimised (the test build leaves our own crates at opt-level 0;
# dependencies, i.e. all model code, are at opt-level 3 in both). Kept aside: a test build
# overwrites target/debug/aiaas.
cargo build -q --workspace --all-targets --locked
BIN=$CARGO_TARGET_DIR/debug
OPT=()
for crate in aiaas-server aiaas-admin aiaas-engine aiaas-migrations; do
  OPT+=(--config "profile.dev.package.$crate.opt-level=3")
done
cargo build -q --locked --workspace --bin aiaas "${OPT[@]}"
WORK=$(mktemp -d)
cp "$BIN/aiaas" "$WORK/aiaas-opt"
cargo build -q --locked --workspace --bin aiaas   # put the test build's binary back
has() { [[ ",$SERVERS," == *",$1,"* ]]; }

wait_ready() { # url
  for _ in $(seq 1 900); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "server at $1 never became ready" >&2; return 1
}

declare -A PID URL KEY MODEL_ID
cleanup() { for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
RAW=$OUT/raw.jsonl
: >"$RAW"

start_aiaas() { # label port [env...]: into $RUN, this repetition's folder
  local label=$1 port=$2; shift 2
  local models=(--model bench="$MODEL")
  [ -d "$EMBEDDER" ] && models+=(--model minilm="$EMBEDDER")
  mkdir -p "$RUN/$label"
  env AIAAS__LEDGER__JOURNAL_DIR="$RUN/$label/journal" "$@" "$WORK/aiaas-opt" serve \
    --bind 127.0.0.1:"$port" "${models[@]}" --database-url "sqlite://$RUN/$label/aiaas.db" \
    >"$RUN/$label.out" 2>>"$OUT/$label.log" &
  PID[$label]=$!
  URL[$label]=http://127.0.0.1:$port/v1
  MODEL_ID[$label]=bench
  wait_ready "http://127.0.0.1:$port/ready"
  KEY[$label]=$(grep -m1 '^sk-aiaas-' "$RUN/$label.out" || echo unused)
}

if has mistralrs-server && [ ! -x "$PEERS/bin/mistralrs" ]; then
  echo "no $PEERS/bin/mistralrs: run bench/install-peers.sh" >&2; exit 1
fi
if has llama.cpp && [ ! -x "$PEERS/llama-venv/bin/python" ]; then
  echo "no llama.cpp peer: run bench/install-peers.sh" >&2; exit 1
fi

start_server() { # name
  case $1 in
    aiaas)
      start_aiaas aiaas 18181
      # Limits that never refuse here but are checked on every request (the token limit makes
      # admission count the prompt's tokens).
      "$WORK/aiaas-opt" tenant set-limits default --rpm 1000000 --tpm 1000000000 \
        --database-url "sqlite://$RUN/aiaas/aiaas.db" >/dev/null
      sleep 1
      ;;
    aiaas-bare)
      start_aiaas aiaas-bare 18182 AIAAS__AUTH__ENABLED=false AIAAS__LEDGER__ENABLED=false
      ;;
    aiaas-pool-off)
      start_aiaas aiaas-pool-off 18185 AIAAS__AUTH__ENABLED=false AIAAS__LEDGER__ENABLED=false \
        AIAAS_ENGINE_POOL=off
      ;;
    mistralrs-server)
      # aiaas's engine settings: CPU, 16 running sequences, no prefix cache.
      "$PEERS/bin/mistralrs" --token-source none serve --host 127.0.0.1 --port 18183 --cpu \
        --max-seqs 16 --prefix-cache-n 0 --format gguf -m "$(dirname "$MODEL")" \
        -f "$(basename "$MODEL")" >>"$OUT/mistralrs-server.log" 2>&1 &
      PID[mistralrs-server]=$!
      URL[mistralrs-server]=http://127.0.0.1:18183/v1
      MODEL_ID[mistralrs-server]=default
      wait_ready http://127.0.0.1:18183/v1/models
      ;;
    llama.cpp)
      # Its chat template comes from the GGUF file, as for the others. It runs one request at a
      # time; by default a new request interrupts the running stream (the client sees the
      # connection drop), so requests must queue instead.
      "$PEERS/llama-venv/bin/python" -m llama_cpp.server --model "$MODEL" --model_alias bench \
        --host 127.0.0.1 --port 18184 --n_threads "$THREADS" --n_threads_batch "$THREADS" \
        --n_ctx 4096 --interrupt_requests false >>"$OUT/llama.cpp.log" 2>&1 &
      PID[llama.cpp]=$!
      URL[llama.cpp]=http://127.0.0.1:18184/v1
      MODEL_ID[llama.cpp]=bench
      wait_ready http://127.0.0.1:18184/v1/models
      ;;
  esac
}

probe() { "$BIN/aiaas-bandwidth" --threads 1,"$THREADS" --mib 1024 --passes 5 \
  --model-bytes "$(stat -c %s "$MODEL")" --json >>"$RAW"; }

ORDER=()
IFS=, read -ra WANTED <<<"$SERVERS"
for s in "${WANTED[@]}"; do
  case $s in aiaas | aiaas-bare | aiaas-pool-off | mistralrs-server | llama.cpp) ORDER+=("$s") ;; esac
done

probe
for rep in $(seq 1 "$REPS"); do
  # Fresh servers every repetition, started and then run in an order that rotates with the
  # repetition: what a process happens to get (where its pages lie; of two servers of the same
  # configuration, the one started first was measured up to ~10% slower at one stream) and
  # which server runs first (or right after another's heaviest level) spread over all of them.
  RUN=$WORK/rep$rep
  mkdir -p "$RUN"
  n=${#ORDER[@]}
  for i in $(seq 0 $((n - 1))); do start_server "${ORDER[$(((i + rep - 1) % n))]}"; done
  [ "$rep" = 1 ] &&
    echo "servers: ${ORDER[*]}; CPU% while starting: $(ps -o %cpu= -p "$(IFS=,; echo "${PID[*]}")" | tr -s ' \n' ' ')"
  for i in $(seq 0 $((n - 1))); do
    s=${ORDER[$(((i + rep - 1) % n))]}
    echo "rep $rep: $s"
    "$BIN/aiaas-load" --url "${URL[$s]}" --model "${MODEL_ID[$s]}" --api-key "${KEY[$s]:-unused}" \
      --label "$s" --rep "$rep" --concurrency "$CONCURRENCY" --requests "$MIN_REQUESTS" \
      --max-tokens "$MAX_TOKENS" --prompt-words "$PROMPT_WORDS" --stagger-ms "$STAGGER_MS" --warmup 2 --json \
      2>>"$RAW" | tail -n +3
  done
  if [ "$rep" = "$REPS" ]; then
    # Resident memory of the last repetition's servers, each after every level.
    for s in "${ORDER[@]}"; do
      awk -v s="$s" '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {printf "{\"rss\":\"%s\",\"rss_kib\":%d,\"hwm_kib\":%d}\n", s, r, h}' \
        "/proc/${PID[$s]}/status" >>"$RAW"
    done
  fi
  cleanup
  PID=()
done
probe

{
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')),"
  echo "model $(basename "$MODEL") ($(stat -c %s "$MODEL") bytes), $PROMPT_WORDS prompt words, max_tokens $MAX_TOKENS,"
  echo "temperature 0, concurrency $CONCURRENCY, max(concurrency, $MIN_REQUESTS) requests per level, $REPS repetitions,"
  echo "clients started ${STAGGER_MS} ms apart."
  echo
  AIAAS_REPORT_CAPTION="$(date -u +%Y-%m-%d), $(nproc) cores, $(basename "$MODEL"), ${PROMPT_WORDS}-word prompts, $MAX_TOKENS output tokens, medians of $REPS" \
    "$BIN/aiaas-report" "$RAW" --svg "$OUT/chart.svg" --threads "$THREADS" \
    --peers "mistralrs-server,llama.cpp$(has aiaas-pool-off && echo ,aiaas-pool-off)"
} | tee "$OUT/table.md"
