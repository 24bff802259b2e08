"""Stacked DLN runs (bnlab.training.stacking) against the same runs trained alone, their slow twin.

Stacked and alone, a run sums in a different order. The BN DLN amplifies such differences some 1e7-fold
over 100-150 steps: in float32 the ICS cosines of its deep layers differ entirely by step 150 (the losses
still agree to 1e-4), so the tests run in float64, where 60 steps leave 1e-9 (1e-6 for l-inf).
"""

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from runhelpers import metrics

from bnlab import store
from bnlab.config import compose
from bnlab.models.dln import DeepLinearNet
from bnlab.models.dln_stack import StackedDLN
from bnlab.store import checkpoint
from bnlab.training.loop import Trainer
from bnlab.training.runner import run, run_stacked
from bnlab.training.stacking import stack_groups, stack_key
from experiments.cli import main as figure_main

FAST = ["train.dtype=float64", "train.steps=60", "probes.every=25", "runtime.log_every=20", "runtime.progress=false",
        "logger=none"]


def configs(runs_dir, seeds, *overrides):
    return [compose([*FAST, *overrides, f"seed={s}", f"runtime.runs_dir={runs_dir}"]) for s in seeds]


def assert_same_rows(stacked_dir, alone_dir, rtol=1e-6, atol=1e-9):
    a, b = metrics(stacked_dir), metrics(alone_dir)
    assert a[["step", "metric", "layer"]].equals(b[["step", "metric", "layer"]])
    np.testing.assert_allclose(a.value.to_numpy(), b.value.to_numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("norm,extra", [
    ("batch", []),
    ("none", ["optim.lr_factor=0.1"]),  # at lr 1e-6 it nears its instability, which amplifies rounding
    ("l1", ["probes.landscape.direction=random"]),  # each run draws its own random direction
    ("linf", ["train.steps=30"]),  # its max amplifies rounding faster: 2e-6 relative in a quantile by step 50
    ("l2", ["norm.center_before_norm=true"]),
])
def test_stacked_runs_log_what_each_run_logs_alone(tmp_path, norm, extra):
    seeds = [0, 1, 2]
    alone = [run(c) for c in configs(tmp_path / "alone", seeds, f"norm={norm}", *extra)]
    stacked = run_stacked(configs(tmp_path / "stacked", seeds, f"norm={norm}", *extra))
    for s, a in zip(stacked, alone, strict=True):
        assert s.name == a.name  # the same run, in the same place of its store
        summary = store.read_summary(s)
        assert summary["status"] == "finished" and summary["stacked_with"] == 3
        assert not (s / checkpoint.CURRENT).exists()
        rows = metrics(s)
        # every probe logged, per run: ICS of all 25 layers, landscape, activations (run's own units)
        probe_steps = len(set(rows.step[rows.metric == "beta"]))
        assert probe_steps >= 2 and (rows.metric == "ics_cos").sum() == 2 * probe_steps  # layers #9, #17
        assert_same_rows(s, a)


def test_stacked_model_matches_each_deep_linear_net_and_hands_back_its_state():
    torch.manual_seed(0)
    models = [DeepLinearNet(10, 5, "l2").double() for _ in range(3)]
    stack = StackedDLN(models, "l2").double()
    x = torch.randn(3, 40, 10, dtype=torch.float64)
    out = stack(x.transpose(1, 2).contiguous()).transpose(1, 2)
    for s, model in enumerate(models):
        np.testing.assert_allclose(out[s].detach().numpy(), model(x[s]).detach().numpy(), rtol=1e-12, atol=1e-15)
        # running statistics updated alike, and the state dict is the DeepLinearNet's own
        member = stack.member_state_dict(s)
        assert member.keys() == model.state_dict().keys()
        for name, tensor in model.state_dict().items():
            np.testing.assert_allclose(member[name].numpy(), tensor.numpy(), rtol=1e-12, atol=1e-15)


def test_a_stacked_run_resumes_alone_and_runs_at_different_steps_resume_as_separate_stacks(tmp_path, monkeypatch):
    overrides = ["norm=batch", "runtime.checkpoint_every=20"]
    seeds = [0, 1, 2]
    alone = [run(c) for c in configs(tmp_path / "alone", seeds, *overrides)]
    real = Trainer.step

    def step_until(limit):
        def step(self, s):
            if s == limit:
                raise KeyboardInterrupt
            real(self, s)
        return step

    # all three stacked, stopped at step 30: each has an ordinary checkpoint at step 20
    monkeypatch.setattr(Trainer, "step", step_until(30))
    with pytest.raises(KeyboardInterrupt):
        run_stacked(configs(tmp_path / "mixed", seeds, *overrides))
    # seed 0 goes on alone to step 50 (checkpoint at 40), so the runs now stand at steps 40, 20, 20
    monkeypatch.setattr(Trainer, "step", step_until(50))
    with pytest.raises(KeyboardInterrupt):
        run(configs(tmp_path / "mixed", [0], *overrides)[0])
    monkeypatch.setattr(Trainer, "step", real)
    resumed = run_stacked(configs(tmp_path / "mixed", seeds, *overrides))
    steps_resumed = [store.read_summary(d)["resumed_from_step"] for d in resumed]
    assert steps_resumed == [40, 20, 20]
    assert [store.read_summary(d).get("stacked_with") for d in resumed] == [None, 2, 2]
    for r, a in zip(resumed, alone, strict=True):
        assert_same_rows(r, a)


def test_only_dln_runs_that_differ_in_seed_alone_are_stacked(tmp_path):
    base = ["logger=none", f"runtime.runs_dir={tmp_path}"]
    seed0, seed1 = (OmegaConf.to_container(compose([*base, f"seed={s}", "norm=batch"]), resolve=True) for s in (0, 1))
    other_lr = OmegaConf.to_container(compose([*base, "seed=2", "norm=batch", "optim.lr_factor=0.1"]), resolve=True)
    noisy = OmegaConf.to_container(compose([*base, "seed=3", "norm=noisy_batch"]), resolve=True)
    groups = stack_groups([seed0, other_lr, seed1, noisy])
    assert [[c["seed"] for c in g] for g in groups] == [[0, 1], [2], [3]]
    assert stack_key(compose([*base, "norm=noisy_batch"])) is None
    assert stack_key(compose([*base, "model=vgg", "scale=smoke"])) is None
    assert stack_key(compose([*base, "norm=batch", "runtime.stack_seeds=false"])) is None
    with pytest.raises(ValueError, match="cannot be stacked"):
        run_stacked([compose([*base, "seed=0"]), compose([*base, "seed=1", "norm=batch"])])


def test_a_figure_trains_its_seeds_stacked(tmp_path, runs_dir, capsys):
    # dln-landscape at smoke scale, 3 seeds: standard and BN, each 3 seeds as one stack
    code = figure_main(["dln-landscape", "--scale", "smoke", "--seeds", "3", "--train", "--jobs", "1",
                        "--out", str(tmp_path / "out"), "train.steps=40"])
    assert code == 0
    out = capsys.readouterr().out
    assert "6 to train" in out and "as 2 jobs" in out
    summaries = [json.loads(p.read_text()) for p in runs_dir.rglob("summary.json")]
    assert len(summaries) == 6 and {s.get("stacked_with") for s in summaries} == {3}


def test_a_packed_task_trains_its_seeds_stacked_and_the_rest_alongside(tmp_path):
    # what one SLURM task of `bnlab-figure --pack 3` does with its runs (bnlab.launch.local.train_together)
    from bnlab.launch.local import train_together

    def container(seed, *extra):
        cfg = compose([*FAST, "norm=batch", "train.steps=20", *extra, f"seed={seed}", f"runtime.runs_dir={tmp_path}"])
        return OmegaConf.to_container(cfg, resolve=True)

    containers = [container(0), container(1), container(0, "norm=l1")]
    train_together(containers)
    summaries = [store.read_summary(store.run_dir(OmegaConf.create(c))) for c in containers]
    assert [s["status"] for s in summaries] == ["finished"] * 3
    assert [s.get("stacked_with") for s in summaries] == [2, 2, None]


def test_stacked_runs_each_log_to_their_own_wandb_run(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "offline")
    directories = run_stacked(configs(tmp_path, [0, 1], "norm=batch", "train.steps=20", "logger=wandb"))
    assert "wandb logging failed" not in caplog.text and "wandb finish failed" not in caplog.text
    for d in directories:
        (attempt,) = (d / "wandb").glob("offline-run-*")
        assert (attempt / f"run-{d.name}.wandb").stat().st_size > 0
