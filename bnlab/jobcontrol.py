"""How a run meets the process around it: the signals that tell it to stop, and the SLURM job it runs in."""

from __future__ import annotations

import os
import signal
import threading


def slurm_job() -> dict | None:
    """The SLURM job this process runs in, if any (the array task's own id and its array's)."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return None
    names = {"job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID", "array_task_id": "SLURM_ARRAY_TASK_ID",
             "restart_count": "SLURM_RESTART_COUNT", "node": "SLURMD_NODENAME", "partition": "SLURM_JOB_PARTITION"}
    return {name: env[var] for name, var in names.items() if var in env}


class StopSignals:
    """Checkpoint before stopping when told to stop. SLURM signals a job before its time limit and on
    preemption (SIGUSR2, which submitit answers by requeueing the job and exiting; SIGTERM before a kill);
    a user presses Ctrl-C. Saving in the middle of a step would save a half-updated model, so the handler
    only notes the signal; the loop checkpoints at the next step boundary and then passes the signal on to
    the handler that was there before (submitit's requeue, Python's KeyboardInterrupt, or the default:
    exit)."""

    SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.pending: list[int] = []
        self.previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self.previous = {s: signal.signal(s, self._note) for s in self.SIGNALS}
        return self

    def _note(self, signum, frame) -> None:
        self.pending.append(signum)

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def forward(self) -> None:
        pending, self.pending = self.pending, []
        for s in pending:
            pass_to(self.previous.get(s), s)


def die_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux; elsewhere nothing). A run
    trained in a worker process then checkpoints and stops when `bnlab-figure` is killed, instead of
    training on, orphaned. (Ctrl-C needs none of this: it reaches the whole process group.)"""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def pass_to(handler, signum: int, frame=None) -> None:
    """Do what `handler` (a previous signal handler) would have done with `signum`."""
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:  # the default action of SIGUSR2, SIGTERM and SIGINT is to end the process
        raise SystemExit(128 + signum)


def train_together(containers: list[dict]) -> None:
    """Train several runs at once: how one SLURM task (bnlab-figure --pack) fills a GPU that one small run
    leaves mostly idle. Runs that differ only in their seed train as one stacked model (bnlab.stack), the
    others each in a process of its own. A stop signal to this process (SLURM's warning before a
    time limit or preemption, SIGTERM) is passed on to every run, which checkpoints at its current step
    and stops; then this process's previous handler acts (submitit requeues the task), and the requeued
    task resumes every run from its checkpoint."""
    from multiprocessing import get_context

    from bnlab.stack import stack_groups

    groups = stack_groups(containers)
    if len(groups) == 1:
        _train_group(groups[0])
        return
    workers = [get_context("spawn").Process(target=_train_group, args=(g,)) for g in groups]
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


def _train_group(containers: list[dict]) -> None:
    from omegaconf import OmegaConf

    from bnlab.stack import run_stacked

    die_with_parent()
    run_stacked([OmegaConf.create(c) for c in containers])
