# Everyday targets. Each is a thin wrapper over a real command; `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
# datasets (MovieLens 100K): $CINESYNC_DATA_DIR, else ../shared/data where it exists (this
# project's workspace), else unset: the loader's own default (~/.cache/cinesync/data)
DATA_DIR ?= $(or $(CINESYNC_DATA_DIR),$(wildcard $(abspath ../shared/data)))
ifneq ($(DATA_DIR),)
export CINESYNC_DATA_DIR := $(DATA_DIR)
endif

.PHONY: help install demo serve test test-slow lint typecheck check bench bench-baselines bench-quality bench-serving bench-encoder bench-index bench-cold-start loadtest clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[serve,train,dev,track]'
	touch $@

install: $(VENV)/.installed ## create .venv and install cinesync with every extra

demo: install ## train on the bundled dataset if the store is empty, publish, serve on :$(PORT)
	$(BIN)/cinesync demo --port $(PORT)

serve: install ## serve the store's LATEST bundle (CINESYNC_* settings)
	$(BIN)/cinesync serve --port $(PORT)

test: install ## the test suite (what CI runs)
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: install ## long tests: soak, load, full-size data
	$(BIN)/python -m pytest -q -m slow

lint: install ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install ## mypy (strict for service/ and model_store/)
	$(BIN)/mypy --strict service model_store
	$(BIN)/mypy training

check: lint typecheck test ## everything CI checks

bench-baselines: install ## pop, ItemKNN, EASE on both MovieLens sets -> benchmarks/results/baselines.*
	$(BIN)/python -m benchmarks.baselines

bench-quality: install ## every model on both MovieLens sets, 3 seeds, ml-100k ablation -> benchmarks/results/quality.*
	CINESYNC_THREADS=$(or $(CINESYNC_THREADS),1) $(BIN)/python -m benchmarks.quality --ablation

bench-cold-start: install ## feature-only queries vs popularity for held-out ml-100k users
	$(BIN)/python -m benchmarks.cold_start

bench-serving: install ## serving latency/throughput against a hello-world baseline
	$(BIN)/python -m benchmarks.serving --floor

bench-encoder: install ## encoder latency: torch eager vs ONNX FP32 vs ONNX INT8
	$(BIN)/python -m benchmarks.encoder

bench-index: install ## Flat vs HNSW vs IVF at 10k-200k items, filtered recall against exact search
	$(BIN)/python -m benchmarks.index

bench: bench-baselines bench-quality bench-encoder bench-index bench-serving ## every benchmark

loadtest: install ## headless locust run against a running service (see README)
	$(BIN)/python -m loadtests.run --host http://127.0.0.1:$(PORT)

clean: ## remove caches and build outputs (not the venv, not the store)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
