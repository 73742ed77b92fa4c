#!/bin/bash
# The benchmark as a SLURM job array: one array task per run (model x seed), then one job, after all of them, that
# builds the table from the runs that finished; a run that failed or never finished is a row that says so.
# From the project root, after `make install data`:
#   scripts/slurm_benchmark.sh --models cnn,vit --seeds 3 --results results/cluster [-- extra fit arguments]
#   SBATCH_ARGS="--partition=gpu --gres=gpu:1 --time=02:00:00" scripts/slurm_benchmark.sh --seeds 5
#   scripts/slurm_benchmark.sh --dry-run --seeds 3     # print the runs and the sbatch commands, submit nothing
# Options before `--` are the benchmark's (python -m mnist_bench.benchmark --help); those after it go to every run.
# Without sbatch on the PATH it behaves as --dry-run. A rerun skips the runs already done with the same config, seed,
# data and code. Each task trains in its own folder (<results>/slurm_runs/task_<n>), so tasks never share a run dir.
set -euo pipefail

PY=${PY:-.venv/bin/python}
SBATCH_ARGS=${SBATCH_ARGS:-}
dry_run=0
bench=()
fit=()
results=results
while (($#)); do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --) shift; fit=("$@"); break ;;
        --results)
            (($# >= 2)) || { echo "slurm_benchmark.sh: --results needs a folder" >&2; exit 2; }
            bench+=("$1" "$2"); results=$2; shift ;;
        --results=*) bench+=("$1"); results=${1#--results=} ;;
        *) bench+=("$1") ;;
    esac
    shift
done
command -v sbatch >/dev/null 2>&1 || dry_run=1

runs=$("$PY" -m mnist_bench.benchmark "${bench[@]}" --list -- "${fit[@]}")
count=$(printf '%s\n' "$runs" | grep -c .)
echo "$count runs (index model seed):"
printf '%s\n' "$runs"

quoted() { if (($#)); then printf '%q ' "$@"; fi; }
task="$(quoted "$PY" -m mnist_bench.benchmark "${bench[@]}") --only \$SLURM_ARRAY_TASK_ID"
task+=" --root $(printf %q "$results")/slurm_runs/task_\$SLURM_ARRAY_TASK_ID -- $(quoted "${fit[@]}")"
table="$(quoted "$PY" -m mnist_bench.benchmark "${bench[@]}") --aggregate -- $(quoted "${fit[@]}")"
# shellcheck disable=SC2206  # SBATCH_ARGS is a list of options, split on purpose
extra_sbatch=($SBATCH_ARGS)
array=(sbatch --parsable --job-name=mnist-bench --array="0-$((count - 1))"
       --output="$results/logs/slurm-%A_%a.out" "${extra_sbatch[@]}" --wrap "$task")
after=(sbatch --parsable --job-name=mnist-bench-table --output="$results/logs/slurm-table-%j.out"
       "${extra_sbatch[@]}" --wrap "$table")

if ((dry_run)); then
    echo "dry run: would submit"
    echo "  $(quoted "${array[@]:0:${#array[@]}-2}")--wrap '$task'"
    echo "  sbatch --dependency=afterany:<array job id> $(quoted "${after[@]:1:${#after[@]}-3}")--wrap '$table'"
    exit 0
fi
mkdir -p "$results/logs"
job=$("${array[@]}")
job=${job%%;*}
table_job=$("${after[0]}" --dependency="afterany:$job" "${after[@]:1}")
echo "submitted array job $job ($count tasks) and table job ${table_job%%;*}; the table: $results/benchmark.md"
