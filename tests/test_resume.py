"""Crash-safe runs: a run killed at any step and started again ends with exactly the metrics of an
uninterrupted run; damaged checkpoints fall back; a checkpoint of another config is refused."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from runhelpers import SHORT, interrupted, metrics

from bnlab import store
from bnlab.config import compose
from bnlab.store import checkpoint
from bnlab.training.runner import run

# Noisy BatchNorm and the random landscape direction: every random generator must be restored.
RUN = ["scale=smoke", "norm=noisy_batch", "train.steps=1500", "probes.every=50", "probes.landscape.direction=random",
       "runtime.checkpoint_every=50", "runtime.log_every=50", "runtime.progress=false", "logger=none"]


def kill_at_a_random_step(runs_dir, seed):
    """Start the run in a process, SIGKILL it at a random moment after its first checkpoint."""
    proc = subprocess.Popen([sys.executable, "-m", "bnlab.cli.train", *RUN, f"runtime.runs_dir={runs_dir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    directory = store.run_dir(compose([*RUN, f"runtime.runs_dir={runs_dir}"]))
    deadline = time.time() + 120
    while not (directory / checkpoint.CURRENT).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(random.Random(seed).uniform(0, 1.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return directory


def test_sigkill_at_a_random_step_then_resume_gives_identical_metrics(tmp_path):
    reference = run(compose([*RUN, f"runtime.runs_dir={tmp_path}/reference"]))
    seed = int.from_bytes(os.urandom(2), "little")
    directory = kill_at_a_random_step(tmp_path / "killed", seed)
    if store.is_finished(directory):
        pytest.skip("the run finished before it could be killed")  # only on a very fast machine
    killed_at = checkpoint.load(directory, _identity())[0]["step"]
    resumed = run(compose([*RUN, f"runtime.runs_dir={tmp_path}/killed"]))
    assert 0 < killed_at < 1500, f"kill seed {seed}"
    assert metrics(resumed).equals(metrics(reference)), f"kill seed {seed}, resumed at step {killed_at}"
    assert not (resumed / checkpoint.CURRENT).exists() and not (resumed / checkpoint.SEGMENTS).exists()
    assert store.read_summary(resumed)["steps_completed"] == 1500


def _identity():
    from bnlab.config import identity

    return identity(compose(RUN))


def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO", logger="bnlab")
    reference = run(compose([*SHORT, f"runtime.runs_dir={tmp_path}/reference"]))
    directory = interrupted(tmp_path / "runs", monkeypatch, at_step=100)
    assert store.read_summary(directory)["status"] == "interrupted"
    current = directory / checkpoint.CURRENT
    current.write_bytes(current.read_bytes()[:1000])  # truncated
    resumed = run(compose([*SHORT, f"runtime.runs_dir={tmp_path}/runs"]))
    assert "is damaged" in caplog.text and "resuming" in caplog.text
    assert metrics(resumed).equals(metrics(reference))


def test_checkpoints_load_weights_only_and_damaged_ones_restart_the_run(tmp_path, monkeypatch, caplog):
    directory = interrupted(tmp_path / "runs", monkeypatch, at_step=100)
    real_load = torch.load

    def strict_load(*args, **kwargs):
        assert kwargs.get("weights_only") is True
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", strict_load)
    assert checkpoint.load(directory, _short_identity())[0]["step"] == 80
    for name in (checkpoint.CURRENT, checkpoint.PREVIOUS):
        (directory / name).write_bytes(b"garbage")
    assert checkpoint.load(directory, _short_identity()) is None
    assert "starts again from step 0" in caplog.text and not (directory / checkpoint.SEGMENTS).exists()


def test_a_checkpoint_a_gpu_wrote_resumes_on_a_machine_without_cuda(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO", logger="bnlab")
    reference = run(compose([*SHORT, f"runtime.runs_dir={tmp_path}/reference"]))
    directory = interrupted(tmp_path / "runs", monkeypatch, at_step=100)
    real_tag = torch.serialization.location_tag
    for name in (checkpoint.CURRENT, checkpoint.PREVIOUS):  # every storage tagged as a save on cuda:0 tags it
        state = torch.load(directory / name, weights_only=True)
        monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(state, directory / name)
        monkeypatch.setattr(torch.serialization, "location_tag", real_tag)
    if not torch.cuda.is_available():  # what the loader met before it mapped to the CPU
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(directory / checkpoint.CURRENT, weights_only=True)
    resumed = run(compose([*SHORT, f"runtime.runs_dir={tmp_path}/runs"]))
    assert "resuming" in caplog.text and "damaged" not in caplog.text
    assert store.read_summary(resumed)["resumed_from_step"] == 80
    assert metrics(resumed).equals(metrics(reference))


def test_a_flipped_bit_is_damage_and_the_previous_checkpoint_takes_over(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO", logger="bnlab")
    directory = interrupted(tmp_path / "runs", monkeypatch, at_step=100)
    current = directory / checkpoint.CURRENT
    data = bytearray(current.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a tensor's record: torch.load alone would read it without a word
    current.write_bytes(bytes(data))
    assert "CRC-32" in checkpoint.damaged(current) and checkpoint.damaged(directory / checkpoint.PREVIOUS) is None
    assert checkpoint.load(directory, _short_identity())[0]["step"] == 40
    assert "fails its CRC-32 check" in caplog.text


def test_an_intact_checkpoint_that_cannot_be_read_here_stops_the_run_and_is_kept(tmp_path, monkeypatch):
    directory = interrupted(tmp_path / "runs", monkeypatch, at_step=100)
    before = sorted(p.name for p in directory.rglob("*"))

    def unreadable(*args, **kwargs):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(torch, "load", unreadable)
    with pytest.raises(checkpoint.CheckpointError, match="intact but cannot be read here.*Nothing was deleted"):
        checkpoint.load(directory, _short_identity())
    with pytest.raises(checkpoint.CheckpointError):
        run(compose([*SHORT, f"runtime.runs_dir={tmp_path}/runs"]))
    assert sorted(p.name for p in directory.rglob("*")) == before  # checkpoints and segments all kept


def test_a_checkpoint_from_another_kind_of_device_is_refused_and_kept(tmp_path, monkeypatch):
    directory = interrupted(tmp_path / "runs", monkeypatch, at_step=100)
    current = directory / checkpoint.CURRENT
    state = torch.load(current, weights_only=True)
    assert state["device_type"] == "cpu"  # what this machine trains on
    assert checkpoint.load(directory, _short_identity(), "cpu")[0]["step"] == 80
    torch.save({**state, "device_type": "cuda"}, current)
    before = sorted(p.name for p in directory.rglob("*"))
    with pytest.raises(checkpoint.CheckpointError, match="written on cuda and this process trains on cpu"):
        run(compose([*SHORT, f"runtime.runs_dir={tmp_path}/runs", "runtime.device=cpu"]))
    assert sorted(p.name for p in directory.rglob("*")) == before


def test_a_checkpoint_from_before_the_device_key_counts_as_a_gpus_when_it_holds_a_cuda_generator(tmp_path,
                                                                                                  monkeypatch):
    directory = interrupted(tmp_path / "runs", monkeypatch, at_step=100)
    current = directory / checkpoint.CURRENT
    state = torch.load(current, weights_only=True)
    del state["device_type"]
    torch.save(state, current)  # a CPU run's, as written before the key
    assert checkpoint.load(directory, _short_identity(), "cpu")[0]["step"] == 80
    torch.save({**state, "cuda_rng": torch.zeros(16, dtype=torch.uint8)}, current)  # a GPU run's
    with pytest.raises(checkpoint.CheckpointError, match="written on cuda"):
        checkpoint.load(directory, _short_identity(), "cpu")


def _short_identity():
    from bnlab.config import identity

    return identity(compose(SHORT))


def test_checkpoint_of_another_config_is_refused_naming_the_keys(tmp_path, monkeypatch):
    directory = interrupted(tmp_path / "runs", monkeypatch, at_step=100)
    other = _short_identity()
    other["optim"]["lr"] = 5e-6
    other["train"]["steps"] = 99
    with pytest.raises(checkpoint.CheckpointError, match="differing keys: optim.lr, train.steps"):
        checkpoint.load(directory, other)


def test_interrupted_vgg_run_resumes_to_identical_metrics(tiny_cifar, tmp_path, monkeypatch):
    tiny = ["model=vgg", "scale=smoke", "norm=noisy_batch", "model.width=0.0625", "train.steps=8", "probes.every=3",
            "data.eval.every=4", "data.train_subset=null", "data.augment=true", "runtime.checkpoint_every=2",
            "runtime.log_every=2", "runtime.progress=false", "logger=none"]
    reference = run(compose([*tiny, f"runtime.runs_dir={tmp_path}/reference"]))
    interrupted(tmp_path / "runs", monkeypatch, at_step=5, overrides=tiny)
    resumed = run(compose([*tiny, f"runtime.runs_dir={tmp_path}/runs"]))
    assert metrics(resumed).equals(metrics(reference))
