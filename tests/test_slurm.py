"""The SLURM launcher on a real one-node cluster (scripts/slurm-local.sh): a figure's runs as one job
array, and a task told it is preempted checkpointing, requeueing and finishing with the same metrics.

Skipped where the cluster cannot be brought up (no root, no apt), unless BNLAB_REQUIRE_SLURM=1 (.ci/run)."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runhelpers import metrics

from bnlab import store
from bnlab.config import compose
from bnlab.store import checkpoint
from bnlab.training.runner import run
from experiments.lib.runs import sweep

pytestmark = pytest.mark.slurm
SCRIPT = Path(__file__).parents[1] / "scripts" / "slurm-local.sh"
# The local node has no GPU, 2 CPUs and less memory than the slurm launcher's default asks for:
# configs/hydra/launcher/slurm_local.yaml asks for what it has (docs/slurm.md's recipe).


@pytest.fixture(scope="session")
def slurm_cluster():
    was_up = subprocess.run([str(SCRIPT), "status"], capture_output=True).returncode == 0
    started = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        message = f"the local SLURM cluster did not start:\n{started.stderr}"
        if os.environ.get("BNLAB_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    conf = subprocess.run([str(SCRIPT), "env"], capture_output=True, text=True).stdout.split("=", 1)[1].strip()
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf  # for this process's squeue/scontrol and every process it starts
    yield conf
    if previous is None:
        os.environ.pop("SLURM_CONF")
    else:
        os.environ["SLURM_CONF"] = previous
    if not was_up:
        subprocess.run([str(SCRIPT), "stop"], check=True)


def slurm(*args) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True).stdout


def test_a_figure_sweep_runs_as_one_job_array_and_the_figure_is_drawn(slurm_cluster, tmp_path):
    env = {**os.environ, "BNLAB_RUNS": str(tmp_path / "runs")}
    command = [sys.executable, "-m", "experiments.cli", "lp-landscape-dln", "--scale", "smoke", "--seeds", "1",
               "--train", "--launcher", "slurm_local", "--pack", "2", "--out", str(tmp_path / "results"),
               "train.steps=300"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "smoke").glob("*/summary.json")]
    assert len(summaries) == 5 and {s["status"] for s in summaries} == {"finished"}
    jobs = [s["slurm"] for s in summaries]
    assert len({j["array_job_id"] for j in jobs}) == 1  # one array ...
    assert sorted(int(j["array_task_id"]) for j in jobs) == [0, 0, 1, 1, 2]  # ... a task per two runs
    assert len({j["job_id"] for j in jobs}) == 3
    assert (tmp_path / "results" / "smoke" / "lp-landscape-dln.png").stat().st_size > 10_000
    claims = json.loads((tmp_path / "results" / "smoke" / "claims.json").read_text())
    assert "lp-landscape-dln" in json.dumps(claims)

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "5 already in the store" in again.stdout and "0 to train" in again.stdout


def signal_then_hurry_the_requeue(job: str, deadline: float) -> None:
    """Send what SLURM sends before a time limit or preemption (the signal submitit handles), wait for the
    task to be requeued, then let it start at once (SLURM holds a requeued job for two minutes)."""
    slurm("scancel", "--signal=USR2", job)
    while not {"Restarts=1", "JobState=PENDING"} <= set(slurm("scontrol", "show", "job", job).split()):
        assert time.time() < deadline, "the job was not requeued"
        time.sleep(0.2)
    # slurmd refuses a credential issued in the same second as the job's kill ("Job credential revoked"),
    # and the job is then dropped, not requeued: start it a few seconds later, not at once.
    time.sleep(3)
    slurm("scontrol", "update", f"JobId={job}", "StartTime=now")


def stop_steps(log_dir: Path) -> dict[str, int]:
    """run key -> the step at which the run checkpointed on the signal, from the tasks' logs."""
    logs = "\n".join(p.read_text() for p in log_dir.glob("*/*_log.*"))
    found = re.findall(r"(\S+): signal SIGUSR2 at step (\d+); checkpointed there", logs)
    return {key: int(step) for key, step in found}


def test_a_task_told_it_is_preempted_checkpoints_requeues_and_finishes_identically(slurm_cluster, tmp_path):
    overrides = ["scale=smoke", "norm=noisy_batch", "train.steps=3000", "probes.every=100",
                 "probes.landscape.direction=random", "runtime.checkpoint_every=1000", "runtime.progress=false"]
    reference = run(compose([*overrides, "logger=none", f"runtime.runs_dir={tmp_path}/reference"]))
    runs = tmp_path / "runs"
    directory = store.run_dir(compose([*overrides, f"runtime.runs_dir={runs}"]))
    multirun = subprocess.Popen(
        [sys.executable, "-c", "from bnlab.cli.train import main; main()", "--multirun", *overrides,
         f"runtime.runs_dir={runs}", "hydra/launcher=slurm_local", "hydra.job.name=bnlab-preempt-test",
         f"hydra.sweep.dir={tmp_path}/sweep"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (directory / checkpoint.CURRENT).exists() and time.time() < deadline and multirun.poll() is None:
        time.sleep(0.01)
    job = slurm("squeue", "-h", "-n", "bnlab-preempt-test", "-o", "%i").strip()
    assert job, "the job is not in the queue"
    signal_then_hurry_the_requeue(job, deadline)
    output = multirun.communicate(timeout=max(1, deadline - time.time()))[0]
    assert multirun.returncode == 0, output

    stopped_at = stop_steps(tmp_path / "sweep" / ".submitit")[directory.name]
    assert 1000 < stopped_at < 3000  # its own checkpoint, not the periodic one at step 1000
    summary = store.read_summary(directory)
    assert summary["status"] == "finished" and summary["resumed_from_step"] == stopped_at
    assert summary["slurm"]["job_id"] == job and summary["slurm"]["restart_count"] == "1"
    assert metrics(directory).equals(metrics(reference))
    wandb_id = re.sub(r"[^A-Za-z0-9_-]", "_", directory.name)
    assert len(list((directory / "wandb").glob(f"offline-run-*-{wandb_id}"))) == 2  # one wandb run, continued


def test_runs_packed_in_one_task_all_checkpoint_on_the_signal_and_resume_identically(slurm_cluster, tmp_path):
    # The runs differ in speed (on one CPU, 3,000 steps take about 6 s without BatchNorm, 10 s with it) and
    # start a few seconds apart: long enough runs that the faster one is still training when the slower one
    # has checkpointed once and the signal comes (at 3,000 steps it sometimes had finished: a flaky test).
    overrides = ["train.steps=8000", "probes.every=100", "runtime.checkpoint_every=500", "logger=none"]
    reference_cfgs = sweep("dln-landscape", "smoke", 1, [*overrides, f"runtime.runs_dir={tmp_path}/reference"])
    references = {directory.name: directory for directory in map(run, reference_cfgs)}
    runs = tmp_path / "runs"
    directories = [store.run_dir(cfg) for cfg in sweep("dln-landscape", "smoke", 1,
                                                       [*overrides, f"runtime.runs_dir={runs}"])]
    figure = subprocess.Popen(
        [sys.executable, "-m", "experiments.cli", "dln-landscape", "--scale", "smoke", "--seeds", "1", "--train",
         "--launcher",
         "slurm_local", "--pack", "2", "--out", str(tmp_path / "results"), *overrides, f"runtime.runs_dir={runs}",
         "hydra.job.name=bnlab-pack-test"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not all((d / checkpoint.CURRENT).exists() for d in directories) and time.time() < deadline:
        assert figure.poll() is None, figure.stdout.read()
        time.sleep(0.01)
    job = slurm("squeue", "-h", "-n", "bnlab-pack-test", "-o", "%i").strip()
    assert len(job.split()) == 1, job  # both runs in one task
    signal_then_hurry_the_requeue(job, deadline)
    output = figure.communicate(timeout=max(1, deadline - time.time()))[0]
    assert figure.returncode == 0, output

    stopped = stop_steps(next((runs / "hydra").glob("*-dln-landscape-slurm_local")) / ".submitit")
    for directory in directories:
        summary = store.read_summary(directory)
        assert directory.name in stopped, f"{directory.name} finished before the signal: {stopped}"
        assert 500 < stopped[directory.name] < 8000  # its own checkpoint, after the first periodic one
        assert summary["resumed_from_step"] == stopped[directory.name] and summary["slurm"]["restart_count"] == "1"
        assert metrics(directory).equals(metrics(references[directory.name]))
