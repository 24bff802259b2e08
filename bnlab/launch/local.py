"""Training runs here: a pool of worker processes (bnlab-figure --jobs), or several runs at once in one
SLURM task (bnlab-figure --pack). Runs that differ only in their seed train as one stacked model."""

from __future__ import annotations

import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from omegaconf import OmegaConf

from bnlab import store
from bnlab.training.runner import run_stacked
from bnlab.training.stacking import stack_groups
from bnlab.util.devices import check_processes_per_gpu
from bnlab.util.process import die_with_parent, pass_to

_POOL_WORKER = False


def train_group(containers: list[dict]) -> list[tuple[str, str, float]]:
    """Train one run, or several stacked (a group of stack_groups): [(directory, status, seconds)] per run."""
    started = time.perf_counter()
    try:
        directories = run_stacked([OmegaConf.create(c) for c in containers])
    except SystemExit as exc:
        if _POOL_WORKER:  # told to stop (SIGTERM), the runs checkpointed: end the worker, which the pool
            sys.stdout.flush()  # would otherwise keep waiting for work from a parent that may be gone
            sys.stderr.flush()
            os._exit(exc.code if isinstance(exc.code, int) else 1)
        raise
    seconds = time.perf_counter() - started
    return [(str(d), (store.read_summary(d) or {}).get("status", "?"), seconds) for d in directories]


def _start_worker() -> None:
    """A worker process trains for a parent that may die: make it stop (checkpointed) when the parent does."""
    global _POOL_WORKER
    _POOL_WORKER = True
    die_with_parent()


def train_pool(containers: list[dict], jobs: int) -> None:
    """Train the runs (full configs, longest first), `jobs` processes at a time, printing each as it ends."""
    groups = stack_groups(containers)  # DLN runs that differ only in seed train as one stacked model
    if len(groups) < len(containers):
        print(f"  as {len(groups)} jobs: runs that differ only in their seed train stacked", flush=True)
    started = time.perf_counter()
    if jobs == 1:
        results = (train_group(g) for g in groups)
    else:
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=_start_worker)
        results = (f.result() for f in as_completed([pool.submit(train_group, g) for g in groups]))
    done = 0
    for group_results in results:
        for directory, status, seconds in group_results:
            done += 1
            print(f"[{done}/{len(containers)}] {status:8s} {seconds:6.1f} s  {Path(directory).name}", flush=True)
    print(f"trained {len(containers)} runs in {time.perf_counter() - started:.0f} s", flush=True)


def _train_in_child(containers: list[dict]) -> None:
    die_with_parent()
    train_group(containers)


def train_together(containers: list[dict]) -> None:
    """Train several runs at once: how one SLURM task (bnlab-figure --pack) fills a GPU that one small run
    leaves mostly idle. Runs that differ only in their seed train as one stacked model, the others each in
    a process of its own. A stop signal to this process (SLURM's warning before a time limit or preemption,
    SIGTERM) is passed on to every run, which checkpoints at its current step and stops; then this
    process's previous handler acts (submitit requeues the task), and the requeued task resumes every run
    from its checkpoint."""
    groups = stack_groups(containers)
    if len(groups) == 1:
        train_group(groups[0])
        return
    check_processes_per_gpu(len(groups), containers[0]["runtime"]["device"], f"--pack {len(containers)}")
    workers = [get_context("spawn").Process(target=_train_in_child, args=(g,)) for g in groups]
    for w in workers:
        w.start()

    def pass_on(signum, frame):
        for w in workers:
            if w.is_alive():
                os.kill(w.pid, signum)
        for w in workers:
            w.join()
        pass_to(previous[signum], signum, frame)

    previous = {s: signal.signal(s, pass_on) for s in (signal.SIGUSR2, signal.SIGTERM)}
    try:
        for w in workers:
            w.join()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    failed = sum(1 for w in workers if w.exitcode)
    if failed:
        raise RuntimeError(f"{failed} of {len(groups)} groups of runs trained together did not finish "
                           "(see the log above)")
