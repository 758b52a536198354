#!/usr/bin/env bash
# Regenerates the results behind the README's "The book's exercises" (CPU, 3 seeds each):
#
#   scripts/exercises.sh            # all of them (about 15 minutes on 2 cores)
#   scripts/exercises.sh l1 noise   # some: wd-sweep l1 dropout-wd noise noise-30 input-noise mc
#                                   #       activations
#
# Each writes under results/ (sweeps under <out>/sweep/<experiment>/), replacing what is there
# (--overwrite); D2L_SWEEP_MODE=--resume finishes an interrupted regeneration instead.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bin=${D2L_BIN:-target/release/d2l-regularization}
if [ -z "${D2L_BIN:-}" ]; then cargo build --release --quiet; fi
mode=${D2L_SWEEP_MODE:---overwrite}
run() { echo "+ $* $mode" >&2; /usr/bin/time -f "  (%e s)" "$bin" --device cpu --quiet "$@" "$mode"; }
all=(wd-sweep l1 dropout-wd noise noise-30 input-noise mc activations)
for what in "${@:-${all[@]}}"; do
  case "$what" in
    wd-sweep) run sweep weight-decay --wd 0,0.1,0.3,1,3,10,30,100 --optimizer sgd,adam,adamw \
                --n-val 100 --seeds 0,1,2 ;;
    l1) run --out results/exercises/l1 sweep weight-decay --wd 0,0.1,0.3,1,3,10,30 \
          --penalty l2,l1,l1-prox --impl scratch --seeds 0,1,2 ;;
    dropout-wd) run --out results/exercises/dropout-wd sweep dropout --engine fused --impl concise \
                  --dropout1 0,0.2,0.5 --dropout2 0,0.5 --wd 0,0.0001,0.001 --seeds 0,1,2 ;;
    noise) run --out results/exercises/noise sweep dropout --impl concise \
             --noise bernoulli,gaussian,dropconnect --seeds 0,1,2 ;;
    noise-30) run --out results/exercises/noise-30 sweep dropout --impl concise --epochs 30 \
                --noise bernoulli,gaussian,dropconnect --seeds 0,1,2 ;;
    input-noise) run --out results/exercises/input-noise sweep dropout --impl concise \
                   --dropout1 0 --dropout2 0 --input-noise 0.3 --seeds 0,1,2
                 run --out results/exercises/no-noise sweep dropout --impl concise \
                   --dropout1 0 --dropout2 0 --seeds 0,1,2 ;;
    mc) run --out results/exercises/mc sweep dropout --impl concise --mc-samples 20 --seeds 0,1,2 ;;
    activations) run --out results/exercises/activations sweep dropout --impl concise \
                   --dropout1 0,0.2 --dropout2 0,0.5 --track-activations --seeds 0,1,2
                 # and the figures of one seed (a sweep draws no per-run charts)
                 "$bin" --device cpu --quiet --out results/exercises/activations-curves dropout \
                   --impl concise --dropout1 0,0.2 --dropout2 0,0.5 --track-activations ;;
    *) echo "unknown: $what (one of ${all[*]})" >&2; exit 2 ;;
  esac
done
