"""Training several DLN runs that differ only in their seed as one stacked model.

One DLN run leaves a CPU core (or a GPU) mostly idle: its step is a few hundred tiny operations, each
costing its dispatch overhead. Stacked (bnlab.models.dln_stack), S runs take one set of operations S
times bigger. Each run keeps everything it has alone: its own directory, metrics, summary, checkpoints
(ordinary ones: a stacked run can resume alone and the other way round), wandb run, generators and probe
results. Stacked and alone, a run computes the same thing in a different summation order, so the two
agree to float rounding (tests/test_stack.py: float64 runs to 1e-6 relative, most values to 1e-9).

`bnlab-figure` and packed SLURM tasks (bnlab.jobcontrol.train_together) stack the runs they train
whenever `stack_key` allows; `runtime.stack_seeds=false` turns it off.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from bnlab import checkpoint, runlock, store
from bnlab.config import identity, resolved, validate
from bnlab.data import build_data
from bnlab.models import build_model
from bnlab.models.dln_stack import STACKABLE_NORMS, StackedDLN
from bnlab.probe_schedule import ProbeSchedule
from bnlab.train import Member, Trainer, run

# Runtime settings the runs of one stack must share (the rest of `runtime` is per run or irrelevant).
SHARED_RUNTIME = ("device", "threads", "compile", "log_every", "checkpoint_every", "stack_seeds")


def stack_key(cfg: DictConfig) -> str | None:
    """Runs with the same key can train as one stacked model: DLN runs without noise or momentum that
    differ only in their seed. None: this run trains alone."""
    cfg = resolved(cfg)
    stackable = (cfg.model.name == "dln" and cfg.runtime.stack_seeds and not cfg.norm.noise.enabled
                 and cfg.norm.kind in STACKABLE_NORMS and cfg.optim.momentum == 0)
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


def run_stacked(cfgs: list[DictConfig]) -> list[Path]:
    """Like bnlab.train.run for each of `cfgs` (a group from stack_groups: runs with one stack_key, or a
    single run of any kind): train those not yet finished as one stacked model, reuse the others. Runs
    resumed from checkpoints at different steps train as one stack per step. Returns the runs'
    directories, in order."""
    cfgs = [resolved(c) for c in cfgs]
    keys = {stack_key(c) for c in cfgs}
    if len(cfgs) > 1 and (None in keys or len(keys) > 1):
        raise ValueError("run_stacked: these runs cannot be stacked together (see bnlab.stack.stack_key)")
    for c in cfgs:
        validate(c)
    directories = [store.find_run(c) for c in cfgs]
    todo = [(c, d) for c, d in zip(cfgs, directories, strict=True) if not store.is_finished(d)]
    if len(todo) <= 1:
        return [run(c) for c in cfgs]
    with ExitStack() as held:
        for _, d in sorted(todo, key=lambda item: str(item[1])):  # one order for every process: no deadlock
            held.enter_context(runlock.hold(d))
        by_step: dict[int, list] = {}
        for c, _ in todo:
            d = store.find_run(c)  # whoever held a lock may have finished that run meanwhile
            if store.is_finished(d):
                continue
            store.write_config(d, c)
            found = checkpoint.load(d, identity(c))
            by_step.setdefault(found[0]["step"] if found else 0, []).append((c, d))
        for group in by_step.values():
            if len(group) == 1:
                Trainer(*group[0]).fit()
            else:
                StackedTrainer([c for c, _ in group], [d for _, d in group]).fit()
    return [store.find_run(c) for c in cfgs]


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
        """Each run's loss, as bnlab.data.GaussianRegression.loss computes it: (S,)."""
        squared = (outputs - targets).square().sum((1, 2))
        if self.reduction == "half_sum":
            return squared / 2
        if self.reduction == "mean":
            return squared / outputs.shape[-1]
        return squared


class StackedTrainer(Trainer):
    """bnlab.train.Trainer's loop over S runs of one stack_key, as one StackedDLN."""

    def __init__(self, cfgs: list[DictConfig], directories: list[Path]):
        cfg = self.cfg = cfgs[0]
        self.directory = directories[0]
        self.members = [Member(c, d) for c, d in zip(cfgs, directories, strict=True)]
        self.key = self.members[0].key
        self._set_up_runtime(cfg)
        models, parts = [], []
        for m in self.members:  # each run's data and initialization exactly as it would make them alone
            torch.manual_seed(m.cfg.seed)
            parts.append(build_data(m.cfg, self.device, self.dtype))
            models.append(build_model(m.cfg))
            m.cpu_rng = torch.random.get_rng_state()
            m.cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        self.data = StackedRegression(parts)
        n = cfg.norm
        self.model = StackedDLN(models, n.kind, n.momentum, n.eps, n.center_before_norm).to(self.device, self.dtype)
        self.channels_last = False
        self._finish_setup(ProbeSchedule(cfg, self.model, self.data.loss, cfg.optim.lr,
                                         seeds=[c.seed for c in cfgs]))

    def _member_state(self, i: int) -> dict:
        """Run i's checkpoint entries, as its Trainer alone would write them. Plain SGD keeps no state, and
        a run without noise draws nothing from torch's generators after its initialization."""
        m = self.members[i]
        return {"model": self.model.member_state_dict(i), "optimizer": self.optimizer.state_dict(),
                "cpu_rng": m.cpu_rng, "cuda_rng": m.cuda_rng}

    def _resume(self) -> int:
        steps = set()
        for i, m in enumerate(self.members):
            found = checkpoint.load(m.directory, identity(m.cfg))
            if found is None:
                steps.add(0)
                continue
            state, m.rows.columns = found
            self.model.load_member_state_dict(i, state["model"])
            m.cpu_rng, m.cuda_rng = state["cpu_rng"], state["cuda_rng"]
            self.probes.direction_rngs[i].set_state(state["direction_rng"])
            self._restore_bookkeeping(m, state)
            steps.add(state["step"])
        if len(steps) > 1:
            raise RuntimeError(f"stacked runs resume from different steps {sorted(steps)}; "
                               "bnlab.stack.run_stacked trains them as one stack per step")
        return steps.pop()
