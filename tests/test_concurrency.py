"""Runs that several processes ask for, sweeps launched again, and runs told to stop: the run lock, the
stop signals and wandb across restarts."""

import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from runhelpers import SHORT, interrupted, metrics

from bnlab import store
from bnlab.config import compose
from bnlab.store import checkpoint, lock
from bnlab.training.runner import run


def test_lock_waits_for_its_holder_and_a_killed_holder_leaves_it_free(tmp_path, caplog):
    directory = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from bnlab.store import lock\n"
         f"with lock.hold(Path({str(directory)!r})):\n    print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    acquired = threading.Event()

    def take():
        with lock.hold(directory):
            acquired.set()

    thread = threading.Thread(target=take)
    thread.start()
    time.sleep(0.5)
    assert not acquired.is_set()  # the holder is alive: we wait
    assert f'"pid": {holder.pid}' in caplog.text  # and say whom for
    holder.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel drops its lock
    holder.wait()
    thread.join(timeout=10)
    assert acquired.is_set()
    assert not (directory / lock.LOCK_NAME).exists()


def test_two_processes_asked_for_the_same_run_train_it_once(tmp_path):
    overrides = ["scale=smoke", "norm=batch", "train.steps=600", "probes=none", "runtime.progress=false",
                 "logger=none", f"runtime.runs_dir={tmp_path}"]
    procs = [subprocess.Popen([sys.executable, "-m", "bnlab.cli.train", *overrides], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    joined = "\n".join(outputs)
    assert len(re.findall(r"finished after 600 steps", joined)) == 1, joined
    assert len(re.findall(r"reusing ", joined)) == 1, joined
    assert store.read_summary(store.run_dir(compose(overrides)))["resumed_from_step"] == 0


def test_a_relaunched_sweep_trains_exactly_the_missing_work(tmp_path, monkeypatch, capsys):
    """Of a figure's five runs one is finished, one half done, three never started."""
    from experiments.cli import main
    from experiments.lib.runs import sweep

    overrides = ["train.steps=200", "probes.every=25", "runtime.checkpoint_every=50", "runtime.log_every=50",
                 "runtime.progress=false", "logger=none", f"runtime.runs_dir={tmp_path}/runs"]
    cfgs = {cfg.norm.kind: cfg for cfg in sweep("lp-landscape-dln", "smoke", 1, overrides)}
    assert sorted(cfgs) == ["batch", "l1", "l2", "linf", "none"]
    finished = run(cfgs["none"])
    finished_summary = (finished / "summary.json").read_bytes()
    half_done = interrupted(tmp_path / "runs", monkeypatch, at_step=120,
                            overrides=["experiment=lp-landscape-dln", "scale=smoke", "norm=batch", *overrides])
    assert half_done == store.run_dir(cfgs["batch"])
    reference = run(compose(["experiment=lp-landscape-dln", "scale=smoke", "norm=batch", *overrides[:-1],
                             f"runtime.runs_dir={tmp_path}/reference"]))

    assert main(["lp-landscape-dln", "--scale", "smoke", "--seeds", "1", "--train", "--jobs", "1", "--out",
                 str(tmp_path / "out"), *overrides]) == 0
    assert "5 distinct runs needed: 1 already in the store, 0 to be served" in capsys.readouterr().out
    assert (finished / "summary.json").read_bytes() == finished_summary  # not touched
    started_from = {norm: store.read_summary(store.run_dir(cfg))["resumed_from_step"] for norm, cfg in cfgs.items()}
    assert started_from == {"none": 0, "batch": 100, "l1": 0, "l2": 0, "linf": 0}
    assert metrics(half_done).equals(metrics(reference))
    assert all(store.is_finished(store.run_dir(cfg)) for cfg in cfgs.values())


def test_sigterm_checkpoints_at_the_current_step_and_the_resumed_run_is_identical(tmp_path):
    overrides = ["scale=smoke", "norm=noisy_batch", "train.steps=2000", "probes=none", "runtime.checkpoint_every=500",
                 "runtime.progress=false", "logger=none"]
    reference = run(compose([*overrides, f"runtime.runs_dir={tmp_path}/reference"]))
    directory = store.run_dir(compose([*overrides, f"runtime.runs_dir={tmp_path}/runs"]))
    proc = subprocess.Popen([sys.executable, "-m", "bnlab.cli.train", *overrides, f"runtime.runs_dir={tmp_path}/runs"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while not (directory / checkpoint.CURRENT).exists() and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, output
    stopped_at = int(re.search(r"signal SIGTERM at step (\d+); checkpointed there", output).group(1))
    assert 500 < stopped_at < 2000  # a checkpoint of its own, not the periodic one at 500
    assert store.read_summary(directory)["status"] == "interrupted"
    resumed = run(compose([*overrides, f"runtime.runs_dir={tmp_path}/runs"]))
    assert store.read_summary(resumed)["resumed_from_step"] == stopped_at
    assert metrics(resumed).equals(metrics(reference))


def test_a_resumed_run_continues_the_same_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    wandb_on = [o for o in SHORT if o != "logger=none"] + ["logger=wandb"]
    directory = interrupted(tmp_path / "runs", monkeypatch, at_step=100, overrides=wandb_on)
    run(compose([*wandb_on, f"runtime.runs_dir={tmp_path}/runs"]))
    run_id = re.sub(r"[^A-Za-z0-9_-]", "_", directory.name)  # offline-run-<date>_<time>-<id>, holding run-<id>.wandb
    attempts = sorted((directory / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2
    for attempt in attempts:
        assert attempt.name.endswith(f"-{run_id}")
        assert (attempt / f"run-{run_id}.wandb").stat().st_size > 0


def test_a_misspelt_launcher_setting_fails_before_anything_is_prepared_or_submitted(tmp_path, capsys):
    from experiments.cli import main

    args = ["lp-landscape-dln", "--scale", "smoke", "--train", "--launcher", "slurm", f"runtime.runs_dir={tmp_path}"]
    assert main([*args, "hydra.launcher.partitoin=gpu"]) == 2
    assert "hydra.launcher.partitoin" in capsys.readouterr().err
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_run_list_entry_out_of_range_is_refused(tmp_path):
    import json

    from omegaconf import OmegaConf

    from bnlab.config import ConfigError
    from bnlab.launch.slurm import listed_runs

    (tmp_path / "runs.json").write_text(json.dumps([[{"seed": 3}, {"seed": 4}]]))
    cfg = OmegaConf.create({"runtime": {"run_list": str(tmp_path / "runs.json"), "run_index": 0}})
    assert [c["seed"] for c in listed_runs(cfg)] == [3, 4]
    cfg.runtime.run_index = 1
    with pytest.raises(ConfigError, match="lists 1 groups"):
        listed_runs(cfg)


def test_killing_bnlab_figure_stops_its_worker_processes_at_a_checkpoint(tmp_path):
    # two unstackable runs (standard and BN) in two pool workers; the parent is killed outright
    env = {**__import__("os").environ, "BNLAB_RUNS": str(tmp_path / "runs")}
    parent = subprocess.Popen([sys.executable, "-m", "experiments.cli", "dln-landscape", "--scale", "smoke",
                               "--seeds", "1", "--train", "--jobs", "2", "--out", str(tmp_path / "out"),
                               "train.steps=1000000", "logger=none"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(list((tmp_path / "runs").rglob(checkpoint.CURRENT))) < 2 and time.time() < deadline:
            time.sleep(0.1)
        assert len(list((tmp_path / "runs").rglob(checkpoint.CURRENT))) == 2
    finally:  # killed whatever happened above: its workers must not train on after a failure
        parent.kill()
        parent.wait()
    deadline = time.time() + 60
    statuses = []
    while time.time() < deadline:
        statuses = [store.read_summary(p.parent)["status"] for p in (tmp_path / "runs").rglob("summary.json")]
        if len(statuses) == 2:
            break
        time.sleep(0.2)
    assert statuses == ["interrupted", "interrupted"]  # each worker checkpointed and stopped
    leftover = subprocess.run(["pgrep", "-f", "multiprocessing.spawn"], capture_output=True, text=True).stdout
    workers = [pid for pid in leftover.split() if str(tmp_path) in _environ_of(pid)]
    deadline = time.time() + 30
    while workers and time.time() < deadline:  # ... and then exited
        time.sleep(0.2)
        workers = [pid for pid in workers if _environ_of(pid)]
    assert not workers


def _environ_of(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""
