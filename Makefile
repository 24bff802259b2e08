# Everything a user runs. The first target used creates .venv and installs bnlab with its dev extras.
#   make reproduce-figure3 SCALE=smoke      train what figure3 needs, draw it, check its claims
#   make reproduce-all SCALE=paper SEEDS=3  every figure
#   make figure-figure3 SCALE=paper         redraw from logged runs, no training
#   make test | lint | bench | sync-wandb
SCALE ?= paper
SEEDS ?=
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNS := $(or $(BNLAB_RUNS),runs)
SEEDS_ARG := $(if $(SEEDS),--seeds $(SEEDS),)

.PHONY: setup test lint bench sync-wandb clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	touch $@

reproduce-%: setup
	$(BIN)/bnlab-figure $* --train --scale $(SCALE) $(SEEDS_ARG) --jobs $(JOBS)

figure-%: setup
	$(BIN)/bnlab-figure $* --scale $(SCALE) $(SEEDS_ARG)

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check bnlab experiments tests scripts

bench: setup
	$(BIN)/python scripts/bench_dln.py

sync-wandb: setup
	find $(RUNS) -type d -name 'offline-run-*' -exec $(BIN)/wandb sync {} +

clean-venv:
	rm -rf $(VENV)
