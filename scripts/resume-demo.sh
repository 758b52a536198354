#!/usr/bin/env bash
# Demonstrates resuming: `dropout --epochs N` (default 30) run once undisturbed, and once killed
# with SIGKILL twice (at random points of its runs) and resumed twice with --resume; then every
# CSV (timing columns aside), chart and weight file of the two is compared.
#
#   scripts/resume-demo.sh [--epochs 30] [any other dropout flags]
#
# The binary: $D2L_BIN, else target/release/d2l-regularization. Prints where each kill came and
# "identical" or the files that differ (exit 1).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${D2L_BIN:-$repo/target/release/d2l-regularization}
[ -x "$bin" ] || { echo "error: no binary at $bin (cargo build --release, or set D2L_BIN)" >&2; exit 1; }
epochs=30
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --epochs) epochs=${2:?}; shift 2 ;;
    --epochs=*) epochs=${1#*=}; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run=("$bin" --device cpu -q dropout --epochs "$epochs" "${args[@]}")

start=$SECONDS
"${run[@]}" --out "$work/whole" >/dev/null
whole_s=$((SECONDS - start))
echo "undisturbed: ${whole_s} s"

# Where a checkpoint stands: "<file> epoch k of n" for the newest one.
where() {
  local newest
  newest=$(ls -t "$work/killed/.dropout.checkpoints/"*.safetensors 2>/dev/null | head -n 1) || true
  [ -n "$newest" ] || { echo "no checkpoint yet"; return; }
  head -c 100000 "$newest" | grep -ao '"epoch\\":[0-9]*' | head -n 1 | sed "s|.*:|$(basename "$newest") after epoch |"
}
# Killed twice, resumed twice: the first run and the first resume are killed at random points
# of the first half of an undisturbed run's time; the second resume finishes.
for attempt in 1 2 3; do
  flags=()
  [ "$attempt" = 1 ] || flags=(--resume)
  if [ "$attempt" = 3 ]; then
    "${run[@]}" "${flags[@]}" --out "$work/killed" >/dev/null 2>"$work/resume.err"
    grep "continuing from its checkpoint" "$work/resume.err" | sed 's/^/resume 2: /'
    break
  fi
  "${run[@]}" "${flags[@]}" --out "$work/killed" >/dev/null 2>&1 &
  pid=$!
  sleep "$(awk -v s="$whole_s" -v r="$RANDOM" 'BEGIN { printf "%.2f", (0.1 + 0.4 * r / 32767) * s }')"
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  echo "kill $attempt (SIGKILL): newest checkpoint $(where)"
done

strip() { # a CSV without its timing columns
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) keep[i] = ($i != "seconds" && $i != "elapsed_s") }
           { line = ""; for (i = 1; i <= NF; i++) if (keep[i]) line = line (line == "" ? "" : ",") $i; print line }' "$1"
}
differ=0 compared=0
for f in "$work/whole/dropout/"*; do
  name=$(basename "$f")
  other="$work/killed/dropout/$name"
  case "$name" in
    *.csv) cmp -s <(strip "$f") <(strip "$other") || { echo "differs: $name"; differ=1; } ;;
    *.svg|*.safetensors) cmp -s "$f" "$other" || { echo "differs: $name"; differ=1; } ;;
    *) continue ;;
  esac
  compared=$((compared + 1))
done
[ -d "$work/killed/.dropout.checkpoints" ] && { echo "checkpoints left behind"; differ=1; }
if [ "$differ" = 0 ]; then
  echo "identical: $compared files (CSV without timing columns, charts, weights)"
else
  exit 1
fi
