# Everything a user runs. The first target used creates .venv and installs bnlab with its dev extras.
#   make reproduce-figure3 SCALE=smoke      train what figure3 needs, draw it, check its claims
#   make reproduce-all SCALE=paper SEEDS=3  every figure
#   make reproduce-figure4 LAUNCHER=slurm ARGS="hydra.launcher.partition=gpu"   one SLURM job array
#   make figure-figure3 SCALE=paper         redraw from logged runs, no training
#   make calibrate-vgg | calibrate-dln          the calibration studies behind the default baselines
#   make test | lint | bench | sync-wandb | slurm-local-start | slurm-local-stop
SCALE ?= paper
SEEDS ?=
LAUNCHER ?= local
PACK ?= 1
ARGS ?=
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNS := $(or $(BNLAB_RUNS),runs)
SEEDS_ARG := $(if $(SEEDS),--seeds $(SEEDS),)

.PHONY: setup test lint bench calibrate-vgg calibrate-dln sync-wandb clean-venv slurm-local-start slurm-local-stop

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	touch $@

reproduce-%: setup
	$(BIN)/bnlab-figure $* --train --scale $(SCALE) $(SEEDS_ARG) --jobs $(JOBS) --launcher $(LAUNCHER) --pack $(PACK) $(ARGS)

figure-%: setup
	$(BIN)/bnlab-figure $* --scale $(SCALE) $(SEEDS_ARG) $(filter-out hydra.% hydra/%,$(ARGS))

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check bnlab experiments tests scripts

bench: setup
	$(BIN)/python scripts/bench.py

# VGG16 at full width on this machine's device (hours on a CPU; the runs resume where they stopped)
calibrate-vgg: setup
	$(BIN)/python scripts/calibrate_vgg.py signal
	$(BIN)/python scripts/calibrate_vgg.py train --jobs $(JOBS) --threads 1
	$(BIN)/python scripts/calibrate_vgg.py report

calibrate-dln: setup
	$(BIN)/python scripts/calibrate_dln.py train --jobs $(JOBS)
	$(BIN)/python scripts/calibrate_dln.py report

sync-wandb: setup
	find $(RUNS) -type d -name 'offline-run-*' -exec $(BIN)/wandb sync {} +

slurm-local-start:
	scripts/slurm-local.sh start

slurm-local-stop:
	scripts/slurm-local.sh stop

clean-venv:
	rm -rf $(VENV)
