"""Runs from their configs: reuse a finished run from the store, or train it under its lock (alone, or
stacked with runs that differ only in their seed)."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path

from omegaconf import DictConfig

from bnlab import store
from bnlab.config import identity, resolved, validate
from bnlab.store import checkpoint, lock
from bnlab.training.loop import Trainer
from bnlab.training.stacking import stack_key
from bnlab.util.devices import resolve_device

log = logging.getLogger("bnlab")


def run(cfg: DictConfig) -> Path:
    """Train the run `cfg` describes, or reuse it if the store already holds it finished.

    Returns the run's directory. A diverging run (non-finite loss) is stopped, marked `diverged` and
    returned like a finished one; other failures write what was measured so far, then raise.
    """
    cfg = resolved(cfg)
    validate(cfg)
    resolve_device(cfg.runtime.device)  # a GPU given and CUDA not working: fail now, before anything is written
    directory = store.find_run(cfg)
    if store.is_finished(directory):
        return _reuse(directory)
    with lock.hold(directory):
        directory = store.find_run(cfg)  # whoever held the lock may have finished it meanwhile
        if store.is_finished(directory):
            return _reuse(directory)
        store.write_config(directory, cfg)
        return Trainer(cfg, directory).fit()


def _reuse(directory: Path) -> Path:
    log.info("reusing %s (%s)", directory, store.read_summary(directory)["status"])
    return directory


def run_stacked(cfgs: list[DictConfig]) -> list[Path]:
    """Like `run` for each of `cfgs` (a group from bnlab.training.stacking.stack_groups: runs with one
    stack_key, or a single run of any kind): train those not yet finished as one stacked model, reuse the
    others. Runs resumed from checkpoints at different steps train as one stack per step. Returns the runs'
    directories, in order."""
    cfgs = [resolved(c) for c in cfgs]
    keys = {stack_key(c) for c in cfgs}
    if len(cfgs) > 1 and (None in keys or len(keys) > 1):
        raise ValueError("run_stacked: these runs cannot be stacked together (see bnlab.training.stacking.stack_key)")
    for c in cfgs:
        validate(c)
        resolve_device(c.runtime.device)
    directories = [store.find_run(c) for c in cfgs]
    todo = [(c, d) for c, d in zip(cfgs, directories, strict=True) if not store.is_finished(d)]
    if len(todo) <= 1:
        return [run(c) for c in cfgs]
    with ExitStack() as held:
        for _, d in sorted(todo, key=lambda item: str(item[1])):  # one order for every process: no deadlock
            held.enter_context(lock.hold(d))
        by_step: dict[int, list] = {}
        for c, _ in todo:
            d = store.find_run(c)  # whoever held a lock may have finished that run meanwhile
            if store.is_finished(d):
                continue
            store.write_config(d, c)
            found = checkpoint.load(d, identity(c))
            by_step.setdefault(found[0]["step"] if found else 0, []).append((c, d))
        for group in by_step.values():
            Trainer([c for c, _ in group], [d for _, d in group]).fit()
    return [store.find_run(c) for c in cfgs]
