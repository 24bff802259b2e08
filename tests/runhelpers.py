"""Helpers shared by the tests of interrupted, resumed and concurrent runs."""

import pytest

from bnlab import store
from bnlab.config import compose
from bnlab.train import run

SHORT = ["scale=smoke", "norm=batch", "train.steps=120", "probes.every=20", "runtime.checkpoint_every=40",
         "runtime.log_every=20", "runtime.progress=false", "logger=none"]


def metrics(directory):
    m = store.read_metrics(directory)
    return m.assign(metric=m.metric.astype(str)).sort_values(["step", "metric", "layer"]).reset_index(drop=True)


def interrupted(runs_dir, monkeypatch, at_step, overrides=SHORT):
    """Run `overrides`, raising KeyboardInterrupt at `at_step` (an in-process stand-in for a kill)."""
    from bnlab.train import Trainer

    real = Trainer.step

    def step(self, s):
        if s == at_step:
            raise KeyboardInterrupt
        real(self, s)

    monkeypatch.setattr(Trainer, "step", step)
    with pytest.raises(KeyboardInterrupt):
        run(compose([*overrides, f"runtime.runs_dir={runs_dir}"]))
    monkeypatch.setattr(Trainer, "step", real)
    return store.run_dir(compose([*overrides, f"runtime.runs_dir={runs_dir}"]))
