#!/usr/bin/env bash
# The GPU check: one command, on a machine with PyTorch 2.11.0+cu130 and no Rust toolchain, that
# brings back everything a lent GPU can tell in its few minutes. Here (with Rust):
#
#   scripts/gpu-bundle.sh                    # .gpu/: the binary, its launcher, tests/cuda.rs, the data
#
# and there, from the repository root, with .gpu/ carried along (git ignores it):
#
#   scripts/gpu-check.sh --out "$OUT"
#
# Options: --out DIR (required), --budget SECONDS (default 480: every step is planned to it and
# cut off at it), --device cuda|cuda:N|cpu (default cuda; cpu rehearses the script without a
# GPU), --bundle DIR (default .gpu), --dropout-epochs N (default 10, the book's), and after
# them any scripts/bench.py flags (e.g. --rounds 2).
#
# It writes at most 8 files, all directly in DIR (nothing deeper, nothing else):
#   gpu-check.log          everything printed, every command's output included, as it happens
#   summary.md             each check as it ends (passed, FAILED, or a warning with the value
#                          measured), then the benchmark's table; rewritten step by step
#   <device>.csv           the benchmark's medians (cuda-h100-….csv: commit it to results/bench/)
#   bench-samples.csv      every timing as it is measured, flushed row by row
#   bench-table.md         the benchmark's markdown table, rewritten after every measurement
#   runs.tar.gz            the rest: every run's files (CSV, run.json, charts, TensorBoard),
#                          each command's log, doctor's report
#
# What it checks, in this order (a failure is reported and the next step runs):
#   0. `doctor`: libtorch, CUDA runtime and driver, GPUs, cuDNN;
#   1. the GPU tests of tests/cuda.rs (graph capture and replay, memory reuse, no host reads);
#   2. both experiments on the device with the Rust binary (autograd engine, then the fused
#      engine with CUDA graphs) and with the PyTorch counterpart: that each ran there
#      (run.json), that no graph capture failed; dropout's concise test accuracy is reported,
#      and a warning (not a failure: one seed swings by ±0.02, tests/fused.rs) below 0.84
#      (0.80 for the fused engine, whose masks differ);
#   3. an out-of-memory error on the device: an error line, no panic, no temporary or staging
#      directory left (the lock file stays, as always; a warning when it says more than that
#      one line);
#   4. the side-by-side benchmark (scripts/bench.py; on a GPU with the torch.compile and
#      whole-step CUDA-graph anchors), as many rounds as the budget leaves room for.
# Exit status 0 when every check passed (warnings allowed), 1 otherwise.
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="" budget=480 dev=cuda bundle="$repo/.gpu" dropout_epochs=10 bench_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=${2:-}; shift 2 ;;
    --budget) budget=${2:-}; shift 2 ;;
    --device) dev=${2:-}; shift 2 ;;
    --bundle) bundle=${2:-}; shift 2 ;;
    --dropout-epochs) dropout_epochs=${2:-}; shift 2 ;;
    *) bench_args+=("$1"); shift ;;
  esac
done
die() { echo "gpu-check: $*" >&2; exit 2; }
[ -n "$out" ] || die "--out DIR is required (the folder whose files come back, e.g. --out \"\$OUT\")"
[[ "$budget" =~ ^[0-9]+$ ]] && [ "$budget" -ge 60 ] || die "--budget takes whole seconds, at least 60 (got '$budget')"
[[ "$dropout_epochs" =~ ^[0-9]+$ ]] && [ "$dropout_epochs" -ge 1 ] || die "--dropout-epochs takes a count (got '$dropout_epochs')"
case "$dev" in cpu|cuda|cuda:[0-9]*) ;; *) die "--device takes cuda, cuda:N or cpu (got '$dev')" ;; esac
bin=${D2L_BIN:-$bundle/bin/d2l-regularization}
tests=${D2L_TEST_BINS-$bundle/bin/cuda-tests}
data_dir=${FASHION_MNIST_DIR:-$bundle/data}
python=${D2L_PYTHON:-python3}
[ -x "$bin" ] || die "no binary at '$bin': run scripts/gpu-bundle.sh where Rust is, and carry $(basename "$bundle")/ along (or set D2L_BIN)"
mkdir -p "$out" || die "cannot create --out '$out'"
out=$(cd "$out" && pwd)

deadline=$((SECONDS + budget))
reserve=20 # seconds kept for the summary and the tarball
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
log="$out/gpu-check.log" summary="$out/summary.md"
: > "$log"
exec > >(tee -a "$log") 2>&1
tee_pid=$!
fail=0
say() { printf '[gpu-check %4ds] %s\n' "$((SECONDS))" "$*"; }
check() { # passed|FAILED|warning, then the text: to the log and to summary.md
  local verdict=$1; shift
  [ "$verdict" = FAILED ] && fail=1
  say "$verdict: $*"
  printf -- '- **%s**: %s\n' "$verdict" "$*" >> "$summary"
}
finish() {
  trap - EXIT INT TERM
  tar -czf "$out/runs.tar.gz.tmp" -C "$work" . 2>/dev/null && mv "$out/runs.tar.gz.tmp" "$out/runs.tar.gz"
  rm -rf "$work" "$out/runs.tar.gz.tmp"
  if [ -f "$out/bench-table.md" ]; then printf '\n## Benchmark\n\n' >> "$summary"; cat "$out/bench-table.md" >> "$summary"; fi
  if [ "$fail" = 0 ]; then check passed "every check (in $SECONDS s of a $budget s budget)"
  else say "some checks FAILED (in $SECONDS s of a $budget s budget)"; printf '\n**Some checks FAILED.**\n' >> "$summary"; fi
  exec 1>&- 2>&-
  wait "$tee_pid" 2>/dev/null
  exit "$fail"
}
trap 'fail=1; finish' INT TERM
trap finish EXIT

# The binary was built elsewhere: libtorch (and the CUDA runtime the shim links) come from this
# machine's torch package, found without importing torch.
torch_dir=$("$python" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("torch").origin))') \
  || die "no torch importable from $python (set D2L_PYTHON)"
export LD_LIBRARY_PATH="$torch_dir/lib:$(dirname "$(dirname "$torch_dir")")/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
data=()
[ -d "$data_dir" ] && data=(--data-dir "$data_dir")

{ echo "# GPU check: $dev"; echo; echo "$(date -u +%FT%TZ), budget $budget s, $(uname -n)"; echo; } > "$summary"

left() { echo $((deadline - reserve - SECONDS)); }
run() { # name, then the command: its output to runs/<name>.log (and the log), cut at the budget
  local name=$1; shift
  local limit; limit=$(left)
  if [ "$limit" -lt 5 ]; then check FAILED "$name: not started, the budget is spent"; return 1; fi
  local start=$SECONDS rc
  timeout -k 5 "$limit" "$@" > "$work/$name.log" 2>&1; rc=$?
  sed "s/^/  $name | /" "$work/$name.log" | tail -40
  case $rc in
    0) say "$name done in $((SECONDS - start)) s"; return 0 ;;
    124|137) check FAILED "$name: stopped at the end of the budget after $((SECONDS - start)) s"; return 1 ;;
    *) check FAILED "$name: exit $rc (runs.tar.gz: $name.log)"; return 1 ;;
  esac
}

# 0. what runs here
if [ "$dev" != cpu ]; then
  "$python" -c 'import torch; assert torch.cuda.is_available(), "no CUDA"; print("[gpu-check] torch", torch.__version__, torch.cuda.get_device_name(0))' \
    || check FAILED "PyTorch sees no CUDA GPU"
fi
"$bin" --version
run doctor "$bin" doctor && check passed "doctor: $(grep -m1 -i 'cuda' "$work/doctor.log" || echo 'ran')"

# 1. the GPU tests (the library-level ones: they start no binary, whose path is the build machine's)
for t in $tests; do
  run "test-$(basename "$t")" "$t" --test-threads 1 a_graph_without tensor_op_epoch count_ops shim_is_built \
    && check passed "$(basename "$t"): $(grep -m1 '^test result' "$work/test-$(basename "$t").log")"
done

# 2. both experiments, both engines, and the counterpart
runs="$work/runs"
run rust-autograd-wd "$bin" --device "$dev" --out "$runs/rust-autograd" weight-decay
run rust-autograd-dropout "$bin" --device "$dev" --out "$runs/rust-autograd" dropout --offline --epochs "$dropout_epochs" "${data[@]}"
run rust-fused-wd "$bin" --device "$dev" --out "$runs/rust-fused" weight-decay --engine fused
run rust-fused-dropout "$bin" --device "$dev" --out "$runs/rust-fused" dropout --engine fused --offline --epochs "$dropout_epochs" "${data[@]}"
run torch-wd "$python" "$repo/scripts/torch_counterpart.py" --device "$dev" --out "$runs/torch" weight-decay
run torch-dropout "$python" "$repo/scripts/torch_counterpart.py" --device "$dev" --out "$runs/torch" dropout --epochs "$dropout_epochs" "${data[@]}"

if [ -f "$work/rust-fused-dropout.log" ] && [ "$dev" != cpu ]; then
  if grep -q "CUDA graph capture failed\|CUDA graph replay failed" "$work/rust-fused-dropout.log"; then
    check FAILED "the fused engine fell back to eager execution: $(grep -m1 'CUDA graph' "$work/rust-fused-dropout.log")"
  else
    check passed "the fused engine trained with CUDA graphs (no capture or replay failed)"
  fi
fi
for side in rust-autograd rust-fused torch; do
  for exp in weight-decay dropout; do
    f="$runs/$side/$exp/run.json"
    [ -f "$f" ] || { check FAILED "$side $exp wrote no run.json"; continue; }
    device=$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["device"])' "$f")
    case "$device" in "$dev"*) check passed "$side $exp ran on $device" ;; *) check FAILED "$side $exp ran on $device, not $dev" ;; esac
  done
  min=0.84; [ "$side" = rust-fused ] && min=0.80
  s="$runs/$side/dropout/summary.csv"
  [ -f "$s" ] || continue
  acc=$("$python" -c 'import csv,sys; print([r for r in csv.DictReader(open(sys.argv[1])) if r["impl"]=="concise"][0]["final_test_acc"])' "$s" 2>/dev/null || echo "?")
  if "$python" -c "import sys; sys.exit(0 if float('$acc') >= $min else 1)" 2>/dev/null; then
    check passed "$side dropout concise: final test accuracy $acc (>= $min after $dropout_epochs epochs)"
  else
    check warning "$side dropout concise: final test accuracy $acc, below $min after $dropout_epochs epochs (one seed; the book's 10 epochs reach about 0.85)"
  fi
  say "$side: $(tail -n +2 "$s" | tr '\n' ' ')"
done

# 3. out of memory on the device
oom="$work/oom"
if [ "$(left)" -ge 5 ]; then
  timeout -k 5 "$(left)" "$bin" --device "$dev" --out "$oom" weight-decay --n-train 100000000 --num-inputs 100000 > "$work/oom.log" 2>&1; rc=$?
  if [ "$rc" = 0 ]; then
    check FAILED "an absurd --n-train did not fail"
  elif grep -q "panicked" "$work/oom.log" || ! grep -q "^error: out of memory" "$work/oom.log" \
       || [ -n "$(find "$oom" -name '.*' ! -name '.*.lock' 2>/dev/null)" ]; then
    check FAILED "out of memory was not reported as one error (runs.tar.gz: oom.log): $(head -c 300 "$work/oom.log")"
  elif [ "$(wc -l < "$work/oom.log")" != 1 ]; then
    check warning "out of memory reported, with $(wc -l < "$work/oom.log") lines: $(head -c 300 "$work/oom.log")"
  else
    check passed "out of memory on $dev: $(cat "$work/oom.log")"
  fi
fi

# 4. the benchmark, in the budget left
bench_budget=$(left)
if [ "$bench_budget" -ge 30 ]; then
  say "benchmark: $bench_budget s of the budget left"
  if timeout -k 5 "$((bench_budget + 10))" "$python" "$repo/scripts/bench.py" --bin "$bin" --device "$dev" "${data[@]}" \
       --budget "$bench_budget" --out "$out" --samples "$out/bench-samples.csv" --table "$out/bench-table.md" \
       "${bench_args[@]}"; then
    check passed "benchmark: $(ls "$out"/*.csv | grep -v bench-samples | xargs -n1 basename | tr '\n' ' ')"
  else
    check FAILED "benchmark: some measurements failed or were cut off (gpu-check.log; what was measured is in bench-samples.csv)"
  fi
else
  check FAILED "benchmark: not started, $bench_budget s of the budget left"
fi
