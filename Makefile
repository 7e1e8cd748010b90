# mlpstudy runbook. `make repro` and `make test` each set up .venv/ first (from requirements.lock).
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# Stages run `mlpstudy`, so the environment's bin/ goes first on PATH for DVC.
export PATH := $(BIN):$(PATH)

.PHONY: setup setup-gpu repro test test-fast lint format lock ui screenshots clean-venv

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## Run the whole pipeline (offline: MLPSTUDY_MNIST_MIRROR=<dir with the MNIST files> make repro).
repro: $(STAMP)
	$(BIN)/dvc repro

## Run the whole test suite, as CI does (tests needing the real MNIST files skip with a reason where they are absent).
test: $(STAMP)
	$(BIN)/python -m pytest

## Run the fast tier while editing: every module's logic, no test marked slow (about two minutes).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Re-lock exact versions after editing dependencies in pyproject.toml (needs uv).
lock:
	uv pip compile pyproject.toml --extra dev --universal --python-version 3.10 \
		--no-header -o requirements.lock
	uv pip compile pyproject.toml --extra dev --extra gpu --universal --python-version 3.10 \
		--no-header -o requirements-gpu.lock

## For an NVIDIA GPU machine (Linux): the same pins plus TensorFlow's CUDA wheels.
setup-gpu: $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements-gpu.lock

## Browse every run of the study (the sqlite store at the root).
ui: $(STAMP)
	$(BIN)/mlpstudy ui --port 5000

## The README's screenshots (docs/images/) from this folder's study: its mlflow.db (copied, never
## written) and reports/study/index.html; needs Chromium (`apt-get install chromium`).
screenshots: $(STAMP)
	$(BIN)/python tests/screenshots.py --root . --out docs/images

clean-venv:
	rm -rf $(VENV)
