"""Several DLN runs that differ only in their seed, trained as one stacked model.

One DLN run leaves a CPU core (or a GPU) mostly idle: its step is a few hundred tiny operations, each
costing its dispatch overhead. Stacked (bnlab.models.dln_stack), S runs take one set of operations S
times bigger. Each run keeps everything it has alone: its own directory, metrics, summary, checkpoints
(ordinary ones: a stacked run can resume alone and the other way round), wandb run, generators and probe
results. Stacked and alone, a run computes the same thing in a different summation order, so the two
agree to float rounding (tests/test_stack.py: float64 runs to 1e-6 relative, most values to 1e-9).

This module says which runs can stack (stack_key, stack_groups) and builds a stack's data and model
(build_stack); the one training loop (bnlab.training.loop.Trainer) trains it. `bnlab-figure` and packed
SLURM tasks stack the runs they train whenever `stack_key` allows; `runtime.stack_seeds=false` turns it off.
"""

from __future__ import annotations

import json

import torch
from omegaconf import DictConfig, OmegaConf

from bnlab.config import identity, resolved
from bnlab.data.datasets import build_data
from bnlab.models import build_model, model_family
from bnlab.norms import normalization
from bnlab.util.rng import rng_state

# Runtime settings the runs of one stack must share (the rest of `runtime` is per run or irrelevant).
SHARED_RUNTIME = ("device", "threads", "compile", "log_every", "checkpoint_every", "stack_seeds")


def stack_key(cfg: DictConfig) -> str | None:
    """Runs with the same key can train as one stacked model: runs of a family that stacks (the DLN) with a
    normalization that has a stacked form, without noise, momentum or curvature probes, that differ only in
    their seed. None: this run trains alone."""
    cfg = resolved(cfg)
    stackable = (model_family(cfg.model.name).stack is not None and cfg.runtime.stack_seeds
                 and normalization(cfg.norm.kind).build_stacked is not None
                 and not cfg.norm.noise.enabled and cfg.optim.momentum == 0
                 and not cfg.probes.hessian.enabled  # the curvature probes measure one run at a time
                 and not OmegaConf.select(cfg, "probes.theorems.enabled", default=False)
                 and not OmegaConf.select(cfg, "probes.spectrum.enabled", default=False))
    if not stackable:
        return None
    ident = identity(cfg)
    ident.pop("seed")
    ident["data"].pop("seed")
    ident["runtime"] = {k: cfg.runtime[k] for k in SHARED_RUNTIME}
    return json.dumps(ident, sort_keys=True, default=str)


def stack_groups(containers: list[dict]) -> list[list[dict]]:
    """The runs (full configs) grouped into stacks, in order of first appearance; a run that cannot be
    stacked is a group of its own."""
    groups: dict[object, list[dict]] = {}
    for i, c in enumerate(containers):
        key = stack_key(OmegaConf.create(c))
        groups.setdefault(i if key is None else key, []).append(c)
    return list(groups.values())


class StackedRegression:
    """The Gaussian regression data of S runs, laid out as the stacked model takes them: (S, width, N)."""

    classification = False

    def __init__(self, parts: list):
        self.inputs = torch.stack([p.inputs.T for p in parts]).contiguous()
        self.targets = torch.stack([p.targets.T for p in parts]).contiguous()
        self.reduction = parts[0].reduction

    def train_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs, self.targets

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each run's loss, as bnlab.data.datasets.GaussianRegression.loss computes it: (S,)."""
        squared = (outputs - targets).square().sum((1, 2))
        if self.reduction == "half_sum":
            return squared / 2
        if self.reduction == "mean":
            return squared / outputs.shape[-1]
        return squared


def build_stack(cfgs: list[DictConfig], device: torch.device, dtype: torch.dtype):
    """The data and model of runs with one stack_key, each run's exactly as it would make them alone, and
    each run's generator states after its initialization (the states its checkpoints carry: a run
    without noise draws nothing from torch's generators after that). Returns (data, model, states)."""
    models, parts, states = [], [], []
    for cfg in cfgs:
        torch.manual_seed(cfg.seed)
        parts.append(build_data(cfg, device, dtype))
        models.append(build_model(cfg))
        states.append(rng_state(device))
    model = model_family(cfgs[0].model.name).stack(models, cfgs[0]).to(device, dtype)
    return StackedRegression(parts), model, states
