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

from bnlab import checkpoint, store
from bnlab.config import compose
from bnlab.train import run

pytestmark = pytest.mark.slurm
SCRIPT = Path(__file__).parents[1] / "scripts" / "slurm-local.sh"
# The local node has no GPU, 2 CPUs: ask for what it has.
LOCAL_NODE = ["hydra.launcher.partition=local", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
              "hydra.launcher.mem_gb=1"]


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
    command = [sys.executable, "-m", "bnlab.figure_cli", "lp-landscape-dln", "--scale", "smoke", "--train",
               "--launcher", "slurm", "--out", str(tmp_path / "results"), "train.steps=300", *LOCAL_NODE]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "smoke").glob("*/summary.json")]
    assert len(summaries) == 5 and {s["status"] for s in summaries} == {"finished"}
    jobs = [s["slurm"] for s in summaries]
    assert len({j["array_job_id"] for j in jobs}) == 1  # one array ...
    assert sorted(int(j["array_task_id"]) for j in jobs) == [0, 1, 2, 3, 4]  # ... a task per run
    assert len({j["job_id"] for j in jobs}) == 5
    assert (tmp_path / "results" / "smoke" / "lp-landscape-dln.png").stat().st_size > 10_000
    claims = json.loads((tmp_path / "results" / "smoke" / "claims.json").read_text())
    assert "lp-landscape-dln" in json.dumps(claims)

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "5 already in the store" in again.stdout and "0 to train" in again.stdout


def test_a_task_told_it_is_preempted_checkpoints_requeues_and_finishes_identically(slurm_cluster, tmp_path):
    overrides = ["scale=smoke", "norm=noisy_batch", "train.steps=3000", "probes.every=100",
                 "probes.landscape.direction=random", "runtime.checkpoint_every=1000", "runtime.progress=false"]
    reference = run(compose([*overrides, "logger=none", f"runtime.runs_dir={tmp_path}/reference"]))
    runs = tmp_path / "runs"
    directory = store.run_dir(compose([*overrides, f"runtime.runs_dir={runs}"]))
    sweep = subprocess.Popen(
        [sys.executable, "-m", "bnlab.train", "--multirun", *overrides, f"runtime.runs_dir={runs}",
         "hydra/launcher=slurm", "hydra.job.name=bnlab-preempt-test", f"hydra.sweep.dir={tmp_path}/sweep", *LOCAL_NODE],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (directory / checkpoint.CURRENT).exists() and time.time() < deadline and sweep.poll() is None:
        time.sleep(0.01)
    job = slurm("squeue", "-h", "-n", "bnlab-preempt-test", "-o", "%i").strip()
    assert job, "the job is not in the queue"
    slurm("scancel", "--signal=USR2", job)  # what SLURM sends before a time limit or preemption (submitit's)
    while not {"Restarts=1", "JobState=PENDING"} <= set(slurm("scontrol", "show", "job", job).split()):
        assert time.time() < deadline, "the job was not requeued"
        time.sleep(0.2)
    # SLURM holds a requeued job for two minutes before it may start again; let it start now.
    slurm("scontrol", "update", f"JobId={job}", "StartTime=now")
    output = sweep.communicate(timeout=max(1, deadline - time.time()))[0]
    assert sweep.returncode == 0, output

    log = "\n".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))
    stopped_at = int(re.search(r"signal SIGUSR2 at step (\d+); checkpointed there", log).group(1))
    assert 1000 < stopped_at < 3000  # its own checkpoint, not the periodic one at step 1000
    summary = store.read_summary(directory)
    assert summary["status"] == "finished" and summary["resumed_from_step"] == stopped_at
    assert summary["slurm"]["job_id"] == job and summary["slurm"]["restart_count"] == "1"
    assert metrics(directory).equals(metrics(reference))
    wandb_id = re.sub(r"[^A-Za-z0-9_-]", "_", directory.name)
    assert len(list((directory / "wandb").glob(f"offline-run-*-{wandb_id}"))) == 2  # one wandb run, continued
