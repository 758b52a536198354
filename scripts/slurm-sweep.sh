#!/usr/bin/env bash
# Submits a sweep to Slurm as a job array: N tasks, task K trains shard K/N of the runs into the
# sweep's --out (a directory every node sees), then a merge job, started only when every task
# succeeded (--dependency=afterok), writes the summary, figures and workbook.
#
#   scripts/slurm-sweep.sh [options] -- [global flags] sweep <experiment> [its flags]
#
#   scripts/slurm-sweep.sh --shards 9 -- --out results sweep dropout --engine fused \
#       --dropout1 0,0.2,0.5 --dropout2 0,0.5,0.8 --seeds 0,1,2
#
# Options (before --):
#   --shards N        array tasks (default 4); runs are dealt to them in turn, so N up to the
#                     number of runs (settings × seeds × versions; a group the fused engine trains
#                     at once counts as one) keeps every task busy
#   --gpu auto|yes|no one GPU per task (--gres=gpu:1) and --device cuda; auto: yes when
#                     `sinfo` lists a GPU in the partition (default auto)
#   --partition P, --time T, --cpus C, --mem M
#                     passed to sbatch (C also becomes --threads C)
#   --sbatch ARG      any other sbatch option, repeatable (e.g. --sbatch=--account=abc)
#   --binary PATH     the d2l-regularization binary (default: target/release of this checkout;
#                     it must be where every node can read it)
#   --warn SECONDS    how long before a task's time limit Slurm warns it (default 180): the
#                     trainer then stops at its next batch and the task requeues itself, to go
#                     on from its checkpoints (dropout) when it starts again
#   --resume          the tasks keep the runs an earlier submission finished (they always do;
#                     this flag is accepted so a resubmitted command reads as what it does)
#   --dry-run         print the sbatch commands instead of submitting them
#
# Tasks are requeueable (--requeue): one that is preempted, requeued by hand (scontrol requeue)
# or warned before its time runs out starts again and continues every unfinished run from its
# last checkpoint (dropout; a weight-decay run, well under a second, trains again). Their logs
# are appended to, so every start of a task is in its log.
# Prints "array job <id>, merge job <id>" and where the logs go (<out>/slurm/). A task that
# failed or was cancelled leaves the merge job pending forever (DependencyNeverSatisfied):
# cancel it and submit the same command again (the finished runs are kept), or finish in one
# process with `d2l-regularization ... sweep <experiment> ... --resume`.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
shards=4 gpu=auto partition="" time_limit="" cpus="" mem="" dry=0 warn=180
binary="$here/target/release/d2l-regularization"
extra=()
usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "slurm-sweep: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) shards=${2:?}; shift 2 ;;
    --shards=*) shards=${1#*=}; shift ;;
    --gpu) gpu=${2:?}; shift 2 ;;
    --gpu=*) gpu=${1#*=}; shift ;;
    --partition) partition=${2:?}; shift 2 ;;
    --partition=*) partition=${1#*=}; shift ;;
    --time) time_limit=${2:?}; shift 2 ;;
    --time=*) time_limit=${1#*=}; shift ;;
    --cpus) cpus=${2:?}; shift 2 ;;
    --cpus=*) cpus=${1#*=}; shift ;;
    --warn) warn=${2:?}; shift 2 ;;
    --warn=*) warn=${1#*=}; shift ;;
    --mem) mem=${2:?}; shift 2 ;;
    --mem=*) mem=${1#*=}; shift ;;
    --sbatch) extra+=("${2:?}"); shift 2 ;;
    --sbatch=*) extra+=("${1#*=}"); shift ;;
    --binary) binary=${2:?}; shift 2 ;;
    --binary=*) binary=${1#*=}; shift ;;
    --resume) shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    *) die "unknown option '$1' (the sweep's own flags go after --; --help lists the options)" ;;
  esac
done
[ $# -gt 0 ] || die "no sweep given: add -- and the command, e.g. -- --out results sweep weight-decay --wd 0,1,3 --seeds 0,1,2"
[[ "$shards" =~ ^[1-9][0-9]*$ ]] && [ "$shards" -le 10000 ] || die "--shards must be 1 to 10000, got '$shards'"
[[ -z "$cpus" || "$cpus" =~ ^[1-9][0-9]*$ ]] || die "--cpus must be a whole number ≥ 1, got '$cpus'"
case "$gpu" in auto|yes|no) ;; *) die "--gpu must be auto, yes or no, got '$gpu'" ;; esac
[ -x "$binary" ] || die "no binary at '$binary': build it (cargo build --release) or give --binary"
binary="$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")"

# The command's --out and experiment (for the merge job and the log directory).
out=runs experiment="" global=() cpus_given=0  # the binary's default --out
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  a=${args[i]}
  case "$a" in
    --out) out=${args[i+1]:-}; global+=(--out "$out") ;;
    --out=*) out=${a#*=}; global+=(--out "$out") ;;
    --no-plot|-q|--quiet) global+=("$a") ;;
    --threads|--threads=*) cpus_given=1 ;;
    --shard|--shard=*) die "leave --shard out: each array task gets its own" ;;
    --overwrite) die "leave --overwrite out: tasks writing into one directory cannot each clear it; empty the directory first" ;;
    sweep) experiment=${args[i+1]:-} ;;
  esac
done
[ -n "$experiment" ] && [ "$experiment" != merge ] || die "the command after -- must be a sweep: [global flags] sweep <weight-decay|dropout> [flags]"
out_abs="$(mkdir -p "$out" && cd "$out" && pwd)"
sweep_dir="$out_abs/sweep/$experiment"
logs="$out_abs/slurm"
mkdir -p "$logs"

if [ "$gpu" = auto ]; then
  gpu=no
  if command -v sinfo >/dev/null; then
    sinfo -h -o %G ${partition:+-p "$partition"} 2>/dev/null | grep -qi gpu && gpu=yes
  fi
fi
common=(--parsable --chdir "$PWD")
[ -n "$partition" ] && common+=(--partition "$partition")
[ -n "$time_limit" ] && common+=(--time "$time_limit")
[ -n "$mem" ] && common+=(--mem "$mem")
common+=("${extra[@]}")
task=()
if [ -n "$cpus" ]; then
  common+=(--cpus-per-task "$cpus")
  [ "$cpus_given" = 1 ] || task+=(--threads "$cpus")
fi
[ "$gpu" = yes ] && task+=(--device cuda)

# The batch scripts, written beside the logs (the exact command each task runs, quoted).
q() { printf '%q ' "$@"; }
cat > "$logs/task.sh" <<EOF
#!/usr/bin/env bash
# One array task: shard \$SLURM_ARRAY_TASK_ID of \$SLURM_ARRAY_TASK_COUNT. When Slurm warns this
# script that the time is nearly up (USR1, sbatch --signal=B:USR1@$warn), the trainer is asked
# to stop (SIGTERM: it ends at its next batch, its finished runs and checkpoints kept) and the
# task requeues itself, to go on from its checkpoints when it starts again.
$(q "$binary" "${task[@]}" "${args[@]}") --shard "\$SLURM_ARRAY_TASK_ID/\$SLURM_ARRAY_TASK_COUNT" &
trainer=\$!
warned=0
trap 'warned=1; kill -TERM \$trainer 2>/dev/null' USR1
# Slurm's own SIGTERM (cancel, requeue, preemption) reaches the trainer directly.
trap ':' TERM
while :; do
  wait \$trainer
  status=\$?
  # wait returns early when a trap ran; the trainer is then still finishing its batch.
  kill -0 \$trainer 2>/dev/null || break
done
if [ \$warned = 1 ]; then
  echo "slurm-sweep: the task's time is nearly up; requeued to go on from its checkpoints"
  scontrol requeue "\${SLURM_ARRAY_JOB_ID}_\${SLURM_ARRAY_TASK_ID}"
  sleep 60 # the requeue ends this script
fi
exit \$status
EOF
cat > "$logs/merge.sh" <<EOF
#!/usr/bin/env bash
# After every task succeeded: the summary, figures and workbook.
exec $(q "$binary" "${global[@]}" sweep merge "$sweep_dir")
EOF
chmod +x "$logs/task.sh" "$logs/merge.sh"

array=(sbatch "${common[@]}" --array "0-$((shards - 1))" --job-name "d2l-$experiment"
  --output "$logs/%x-%A_%a.out" --open-mode append --requeue --signal "B:USR1@$warn")
[ "$gpu" = yes ] && array+=(--gres gpu:1)
array+=("$logs/task.sh")
if [ "$dry" = 1 ]; then
  q "${array[@]}"; echo
  q sbatch "${common[@]}" --dependency "afterok:<array job>" --job-name "d2l-$experiment-merge" \
    --output "$logs/%x-%j.out" "$logs/merge.sh"; echo
  exit 0
fi
command -v sbatch >/dev/null || die "sbatch is not on PATH: run this on a Slurm login node (or use --dry-run)"
array_id=$("${array[@]}")
array_id=${array_id%%;*}
merge_id=$(sbatch "${common[@]}" --dependency "afterok:$array_id" --job-name "d2l-$experiment-merge" \
  --output "$logs/%x-%j.out" "$logs/merge.sh")
merge_id=${merge_id%%;*}
echo "array job $array_id, merge job $merge_id"
echo "logs in $logs; results in $sweep_dir (summary.csv when job $merge_id has run)"
echo "watch: squeue -j $array_id,$merge_id"
