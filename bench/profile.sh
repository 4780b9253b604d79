#!/usr/bin/env bash
# Where a steady decode's time goes: `perf record` (Debian's linux-perf) of aiaas with auth,
# limits and ledger off while it streams CONCURRENCY long completions, then the hottest symbols.
#
#   bench/profile.sh                  # one stream; CONCURRENCY=8 bench/profile.sh for a batch
#   MAX_TOKENS=1 REQUESTS=60 bench/profile.sh   # prompts only (prefill: ~133-token prompts)
#
# Writes $OUT/profile-c$CONCURRENCY.txt (perf report of the server's threads, flat, by symbol),
# $OUT/threads-c$CONCURRENCY.txt (each busy thread's own top symbols, as shares of that thread's
# samples) and keeps perf.data there (with MAX_TOKENS=1: profile-prefill.txt, threads-prefill.txt,
# perf-prefill.data). The recording is system-wide (`perf record -a`), then filtered to the
# server's process: on KVM guests `perf record -p` was seen to put samples on the wrong threads.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${AIAAS_CACHE:-$HOME/.cache/aiaas}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
MODEL=${MODEL:-$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf}
CONCURRENCY=${CONCURRENCY:-1}
SECONDS_RECORDED=${SECONDS_RECORDED:-15}
MAX_TOKENS=${MAX_TOKENS:-1024}
REQUESTS=${REQUESTS:-$CONCURRENCY}
NAME=c$CONCURRENCY
[ "$MAX_TOKENS" = 1 ] && NAME=prefill
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
command -v perf >/dev/null || { echo "perf not found: apt-get install linux-perf" >&2; exit 1; }
[ -f "$MODEL" ] || scripts/fetch-demo-models.sh
cargo build -q --workspace --all-targets --locked
BIN=$CARGO_TARGET_DIR/debug
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

AIAAS__AUTH__ENABLED=false AIAAS__LEDGER__ENABLED=false AIAAS__LEDGER__JOURNAL_DIR="$WORK/journal" \
  "$BIN/aiaas" serve --bind 127.0.0.1:18195 --model bench="$MODEL" \
  --database-url "sqlite://$WORK/aiaas.db" >/dev/null 2>"$WORK/log" &
PID=$!
for _ in $(seq 1 600); do curl -sf http://127.0.0.1:18195/ready >/dev/null 2>&1 && break; sleep 0.2; done
# Long outputs by default, so that the recording sees decoding, not prefill.
"$BIN/aiaas-load" --url http://127.0.0.1:18195/v1 --model bench --concurrency "$CONCURRENCY" \
  --requests "$REQUESTS" --max-tokens "$MAX_TOKENS" --prompt-words 86 --warmup 1 >/dev/null &
LOAD=$!
sleep 8
perf record -F 499 -g -a -o "$OUT/perf-$NAME.data" -- sleep "$SECONDS_RECORDED" 2>/dev/null
kill "$LOAD" 2>/dev/null || true
perf report -i "$OUT/perf-$NAME.data" --pid "$PID" --percentage relative --no-children \
  --sort symbol --stdio 2>/dev/null |
  grep -E '^ +[0-9]+\.[0-9]+%' | head -40 | tee "$OUT/profile-$NAME.txt" || true
# Per thread: each sample's thread and leaf symbol (the first frame of its call chain), for the
# server's threads; threads with at least 5% of the server's samples, 15 symbols each.
TIDS=$(ls /proc/"$PID"/task | paste -sd,)
perf script -i "$OUT/perf-$NAME.data" --tid "$TIDS" -F tid,ip,sym 2>/dev/null |
  awk 'NF == 1 && $1 ~ /^[0-9]+$/ { tid = $1; leaf = 1; next }
       leaf && NF >= 2 { $1 = ""; sub(/^ +/, ""); print tid "\t" $0; leaf = 0 }' >"$WORK/leaves"
TOTAL=$(wc -l <"$WORK/leaves")
cut -f1 "$WORK/leaves" | sort | uniq -c | sort -rn | while read -r n tid; do
  [ $((n * 20)) -ge "$TOTAL" ] || continue
  echo "thread $tid ($(cat /proc/"$PID"/task/"$tid"/comm 2>/dev/null)): $((100 * n / TOTAL))% of the server's samples"
  awk -F'\t' -v t="$tid" '$1 == t { print $2 }' "$WORK/leaves" | sort | uniq -c | sort -rn |
    head -15 | awk -v n="$n" '{ c = $1; $1 = ""; printf "  %5.1f%% %s\n", 100 * c / n, $0 }'
done | tee "$OUT/threads-$NAME.txt"
