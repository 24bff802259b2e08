"""One trainer per run: an exclusive lock on <run>/run.lock, held while the run trains.

It is an flock, which the kernel drops when its holder ends in any way (exit, exception, SIGKILL, OOM
kill), so a crashed owner never leaves a run stuck. Two processes asked for the same run (two sweeps, a
requeued SLURM job meeting its old self) never both train it: the second waits, then finds the run finished
and reuses it, or resumes it from its checkpoint if the first died. Linux maps flock on NFS to the lock
manager's locks, which a crashed client's server frees too.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)
LOCK_NAME = "run.lock"


def owner_description() -> dict:
    """Who holds the lock, for the message a waiting process prints."""
    owner = {"host": socket.gethostname(), "pid": os.getpid(),
             "since": datetime.now(UTC).isoformat(timespec="seconds")}
    if "SLURM_JOB_ID" in os.environ:
        owner["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    return owner


@contextmanager
def hold(directory: Path):
    """Hold the run's lock for the duration of the block, waiting for another holder to finish first."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("run %s is being trained by %s; waiting for it to finish", directory, _read(fd))
            fcntl.flock(fd, fcntl.LOCK_EX)
        # The holder before us removes the file when it is done; a lock on a removed file guards nothing,
        # so lock whatever file is at the path now.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(owner_description()).encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding it: a process waiting on this file retries
        os.close(fd)


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode(errors="replace") or "another process"
    except OSError:
        return "another process"
