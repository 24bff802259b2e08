"""How a process meets the processes around it: the signals that tell it to stop, its parent's death, and the
SLURM job it runs in."""

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
