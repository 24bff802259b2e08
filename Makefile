# Everything a user runs; `make help` lists the targets (each target's `## ` comment is its line there).
# The first target used creates .venv and installs bnlab with its dev extras.
SCALE ?= paper
SEEDS ?=
LAUNCHER ?= local
PACK ?= 1
ARGS ?=
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
PYTHON ?= python3
# TORCH=cpu: torch's CPU-only wheels (a few hundred MB) instead of PyPI's CUDA build (about 5.5 GB), from
# pytorch.org's index; for a machine without a GPU. Any other value is taken as a pip index URL.
TORCH ?=
TORCH_INDEX := $(if $(filter cpu,$(TORCH)),https://download.pytorch.org/whl/cpu,$(TORCH))
VENV := .venv
BIN := $(VENV)/bin
RUNS := $(or $(BNLAB_RUNS),runs)
SEEDS_ARG := $(if $(SEEDS),--seeds $(SEEDS),)

.DEFAULT_GOAL := help
.PHONY: help setup test lint bench gpu-check calibrate-vgg calibrate-dln sync-wandb clean-venv slurm-local-start slurm-local-stop

help:  ## this list
	@echo "make TARGET [VARIABLE=value ...]"
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-zA-Z%_-]+:.*## / {printf "  %-20s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "FIGURE is one of: $$(cd configs/experiment && ls *.yaml | sed 's/\.yaml$$//' | tr '\n' ' ')"
	@echo "(what each reproduces and what it costs: .venv/bin/bnlab-figure --list)"

setup: $(VENV)/.installed  ## create .venv and install bnlab with its dev extras [TORCH=cpu: CPU-only torch]

# pip compiles every installed module to bytecode one file at a time (85 of its 139 s here); compileall does the
# same on every core, after. A file or two that needs a newer Python's syntax fails to compile (torch ships
# one); pip skips those silently, and so does this.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/pip install --no-compile torch torchvision --index-url $(TORCH_INDEX))
	$(BIN)/pip install --no-compile -e ".[dev]"
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	touch $@

reproduce-%: setup  ## reproduce-FIGURE|all|beyond [SCALE=smoke|paper SEEDS=n JOBS=n LAUNCHER=slurm]: train what is missing, draw, check claims
	$(BIN)/bnlab-figure $* --train --scale $(SCALE) $(SEEDS_ARG) --jobs $(JOBS) --launcher $(LAUNCHER) --pack $(PACK) $(ARGS)

figure-%: setup  ## figure-FIGURE|all|beyond [SCALE=..]: redraw a figure and its claims from logged runs, no training
	$(BIN)/bnlab-figure $* --scale $(SCALE) $(SEEDS_ARG) $(filter-out hydra.% hydra/%,$(ARGS))

test: setup  ## the test suite
	$(BIN)/python -m pytest -q

lint: setup  ## ruff over the code
	$(BIN)/ruff check bnlab experiments tests scripts

bench: setup  ## benchmarks, side by side with reference implementations, into results/bench/
	$(BIN)/python scripts/bench.py

# VGG16 at full width on this machine's device (hours on a CPU; the runs resume where they stopped); the
# 500-step screen of the candidates between He and Glorot, and of the choice against He at the smoke width
# (docs/calibration.md)
VGG_SCREEN ?= glorot_x1.6_fc_head,he_x0.8_fc_head
# the screen's choice by its rule, trained 1,500 steps; beside the paper's Fig 1a when PAPER_FIGURES names
# the folder of the paper's figure crops (references/figures)
VGG_LONG ?= glorot_x1.6_fc_head
PAPER_FIGURES ?=
calibrate-vgg: setup  ## the VGG calibration study (full width: hours on a CPU) into results/calibration/
	$(BIN)/python scripts/calibrate_vgg.py signal
	$(BIN)/python scripts/calibrate_vgg.py collapse
	$(BIN)/python scripts/calibrate_vgg.py train --jobs $(JOBS) --threads 1
	$(BIN)/python scripts/calibrate_vgg.py report
	$(BIN)/python scripts/calibrate_vgg.py train --steps 500 --candidates $(VGG_SCREEN) --jobs $(JOBS) --threads 1
	$(BIN)/python scripts/calibrate_vgg.py train --steps 500 --width 0.125 --candidates he_normal_fc_head,$(VGG_LONG) --jobs $(JOBS) --threads 1
	$(BIN)/python scripts/calibrate_vgg.py report --steps 500 --widths 1,0.125
	$(BIN)/python scripts/calibrate_vgg.py train --steps 1500 --candidates $(VGG_LONG) --norms none --lrs 0.01,0.1 --jobs $(JOBS) --threads 1
	$(BIN)/python scripts/calibrate_vgg.py train --steps 1500 --candidates $(VGG_LONG) --norms batch --lrs 0.1 --jobs $(JOBS) --threads 1
	$(BIN)/python scripts/calibrate_vgg.py report --steps 1500 --widths 1 $(if $(PAPER_FIGURES),--paper-fig1 $(PAPER_FIGURES)/fig01.png)

gpu-check: setup  ## on a GPU machine: driver and build, the gpu tests, VGG speed and memory, kill/resume (~5 min)
	$(BIN)/python scripts/gpu_check.py

calibrate-dln: setup  ## the DLN calibration study into results/calibration/
	$(BIN)/python scripts/calibrate_dln.py train --jobs $(JOBS)
	$(BIN)/python scripts/calibrate_dln.py train --lp --jobs $(JOBS)
	$(BIN)/python scripts/calibrate_dln.py report
	$(BIN)/python scripts/calibrate_dln.py report --lp

sync-wandb: setup  ## upload the offline W&B runs of the run store (needs `wandb login`)
	find $(RUNS) -type d -name 'offline-run-*' -exec $(BIN)/wandb sync {} +

slurm-local-start:  ## start a one-node SLURM cluster on this machine (for LAUNCHER=slurm)
	scripts/slurm-local.sh start

slurm-local-stop:  ## stop it
	scripts/slurm-local.sh stop

clean-venv:  ## remove .venv
	rm -rf $(VENV)
