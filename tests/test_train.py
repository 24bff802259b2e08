"""The training loop through bnlab.training.runner.run: files, reuse, divergence, probes' neutrality, wandb."""

import json

import pandas as pd
import pytest

from bnlab import store
from bnlab.config import compose
from bnlab.training.runner import run

TINY = ["scale=smoke", "train.steps=30", "probes.every=10", "runtime.progress=false", "runtime.log_every=10"]


def tiny(runs_dir, *extra, logger="none"):
    return compose([*TINY, f"runtime.runs_dir={runs_dir}", f"logger={logger}", *extra])


def losses(directory):
    m = store.read_metrics(directory)
    return m[m.metric == "loss"].sort_values("step")["value"].tolist()


def test_run_writes_config_tidy_metrics_and_summary(runs_dir):
    directory = run(tiny(runs_dir, "norm=batch"))
    assert directory.parent == runs_dir / "smoke"
    assert (directory / "config.yaml").exists()
    metrics = pd.read_parquet(directory / "metrics.parquet")
    assert list(metrics.columns) == ["step", "metric", "layer", "value"]
    assert (metrics[metrics.metric == "loss"].step.tolist()) == list(range(30))
    ics = metrics[metrics.metric == "ics_cos"]
    assert sorted(ics.step.unique()) == [0, 10, 20] and sorted(ics.layer.unique()) == [9, 17]  # figure 3's layers
    assert (metrics.metric.str.startswith("grad_diff@")).sum() == 3 * 8
    assert set(metrics[metrics.metric == "bn_sigma_mean"].layer) == set(range(1, 25))
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps_completed"] == 30
    assert summary["final_loss"] == pytest.approx(losses(directory)[-1])
    for key in ("wall_time_s", "device", "torch", "bnlab", "git_commit"):
        assert summary[key]


def test_finished_run_is_reused_not_rerun(runs_dir):
    cfg = tiny(runs_dir)
    directory = run(cfg)
    stamp = (directory / "metrics.parquet").stat().st_mtime_ns
    assert run(cfg) == directory
    assert (directory / "metrics.parquet").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("damage", ["metrics", "summary"])
def test_damaged_run_is_trained_again(runs_dir, damage):
    cfg = tiny(runs_dir, "probes=none")
    directory = run(cfg)
    target = directory / ("metrics.parquet" if damage == "metrics" else "summary.json")
    target.write_bytes(b"garbage")
    assert not store.is_finished(directory)
    assert run(cfg) == directory and store.is_finished(directory)
    assert len(losses(directory)) == 30


def test_run_without_probes_is_served_by_a_probed_twin(runs_dir):
    probed = run(tiny(runs_dir, "norm=batch"))
    plain = tiny(runs_dir, "norm=batch", "probes=none")
    assert store.find_run(plain) == probed
    assert run(plain) == probed and not store.run_dir(plain).exists()  # nothing trained
    other = tiny(runs_dir, "norm=batch", "probes=none", "optim.lr=2e-6")  # another trajectory: no twin
    assert store.find_run(other) == store.run_dir(other)
    probed_elsewhere = tiny(runs_dir, "norm=batch", "probes.every=5")  # other probe steps: not substituted
    assert store.find_run(probed_elsewhere) == store.run_dir(probed_elsewhere)


CURVATURE = ["probes.hessian.enabled=true", "probes.hessian.every=10", "probes.hessian.iterations=4",
             "probes.theorems.enabled=true", "probes.theorems.every=20", "probes.theorems.units=2"]


def test_a_run_is_served_by_a_twin_whose_probes_cover_its_own_bit_for_bit(runs_dir, tmp_path):
    from runhelpers import metrics

    covering = run(tiny(runs_dir, "norm=batch", *CURVATURE))
    default = tiny(runs_dir, "norm=batch")
    assert store.find_run(default) == covering and run(default) == covering
    assert not store.run_dir(default).exists()  # nothing trained
    assert store.find_run(tiny(runs_dir, "norm=batch", *CURVATURE[:3])) == covering  # the Hessian alone: covered
    other = tiny(runs_dir, "norm=batch", "probes.ics.layers=[1,2]")  # a probe measured otherwise: not covered
    assert store.find_run(other) == store.run_dir(other)
    # what the served run holds is what the run logs when trained alone, every row bit for bit
    alone = metrics(run(tiny(tmp_path / "alone", "norm=batch")))
    held = metrics(covering)
    held = held[held.metric.isin(set(alone.metric))].reset_index(drop=True)
    pd.testing.assert_frame_equal(held, alone)
    # and the reverse: a default-probed run in the store does not serve a curvature run
    plain_store = tmp_path / "plain"
    run(tiny(plain_store, "norm=batch"))
    wanted = tiny(plain_store, "norm=batch", *CURVATURE)
    assert store.find_run(wanted) == store.run_dir(wanted)


def test_divergence_marks_the_run_and_does_not_raise(runs_dir):
    directory = run(tiny(runs_dir, "optim.lr=1.0", "probes=none", "train.steps=200"))
    summary = store.read_summary(directory)
    assert summary["status"] == "diverged"
    assert summary["diverged_at_step"] is not None and summary["steps_completed"] < 200
    assert store.is_finished(directory)  # reused, not retried, by later sweeps


def test_same_seed_same_run_other_seed_other_data(runs_dir, tmp_path):
    a = losses(run(tiny(runs_dir, "norm=batch")))
    b = losses(run(tiny(tmp_path / "again", "norm=batch")))
    c = losses(run(tiny(runs_dir, "norm=batch", "seed=1")))
    assert a == b and a != c


# (BatchNorm after the ReLU is VGG's alone: its runs go through every probe in tests/test_figures.py)
@pytest.mark.parametrize("norm", ["noisy_batch", "l1", "batch_population", "layer", "group", "weight"])
def test_probes_do_not_change_the_trajectory(runs_dir, norm):
    probed = losses(run(tiny(runs_dir, f"norm={norm}")))
    plain = losses(run(tiny(runs_dir, f"norm={norm}", "probes=none")))
    assert probed == plain  # bit for bit, noisy layers included


def test_noise_without_batchnorm_is_an_option(runs_dir):
    directory = run(tiny(runs_dir, "norm=none", "norm.noise.enabled=true", "probes=none"))
    assert "none+noise" in directory.name
    assert losses(directory) != losses(run(tiny(runs_dir, "norm=none", "probes=none")))


@pytest.mark.parametrize("env_mode", ["offline", ""])  # set but empty: the default, offline
def test_wandb_offline_run_files(runs_dir, monkeypatch, env_mode):
    monkeypatch.setenv("WANDB_MODE", env_mode)
    directory = run(tiny(runs_dir, "probes=none", "experiment_name=wandb-test", logger="wandb"))
    offline = list((directory / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    files = list(offline[0].glob("run-*.wandb"))
    assert files and files[0].stat().st_size > 0
    assert directory.name in files[0].name


def test_wandb_receives_strided_loss_and_every_probe_metric(runs_dir, monkeypatch):
    import wandb

    logged = []

    class FakeRun:
        summary = {}

        def log(self, metrics, step):
            logged.append((step, metrics))

        def finish(self):
            pass

    monkeypatch.setattr(wandb, "init", lambda **kwargs: FakeRun())
    run(tiny(runs_dir, "logger.wandb.every_n_steps=4", logger="wandb"))
    loss_steps = [step for step, m in logged if "loss" in m]
    assert loss_steps == list(range(0, 30, 4))
    assert [step for step, m in logged if "ics_cos/layer9" in m] == [0, 10, 20]


def test_wandb_failure_does_not_fail_the_run(runs_dir, monkeypatch):
    import wandb

    def broken(*args, **kwargs):
        raise RuntimeError("no wandb today")

    monkeypatch.setattr(wandb, "init", broken)
    directory = run(tiny(runs_dir, "probes=none", logger="wandb"))
    assert store.read_summary(directory)["status"] == "finished"
