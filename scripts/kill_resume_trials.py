"""Kill-and-resume trials: SIGKILL a run at a random moment, start it again, compare its metrics with an
uninterrupted run's. Prints one line per trial and the count that ended identical.

    python scripts/kill_resume_trials.py [TRIALS] [OVERRIDE ...]    # e.g. 3 runtime.device=cuda
"""

import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bnlab import store
from bnlab.config import compose, identity
from bnlab.store import checkpoint
from bnlab.training.runner import run

RUN = ["scale=smoke", "norm=noisy_batch", "train.steps=1500", "probes.every=50", "probes.landscape.direction=random",
       "runtime.checkpoint_every=50", "runtime.log_every=50", "runtime.progress=false", "logger=none"]


def metrics(directory):
    m = store.read_metrics(directory)
    return m.assign(metric=m.metric.astype(str)).sort_values(["step", "metric", "layer"]).reset_index(drop=True)


def main(trials: int, overrides: list[str] = ()) -> tuple[int, int]:
    """(identical, killed) over `trials` trials of the run RUN + `overrides`."""
    run_overrides = [*RUN, *overrides]
    root = Path(tempfile.mkdtemp())
    started = time.perf_counter()
    reference = metrics(run(compose([*run_overrides, f"runtime.runs_dir={root}/reference"])))
    uninterrupted_s = time.perf_counter() - started
    identical = killed = 0
    for trial in range(trials):
        runs = root / f"trial{trial}"
        cfg = compose([*run_overrides, f"runtime.runs_dir={runs}"])
        proc = subprocess.Popen([sys.executable, "-m", "bnlab.cli.train", *run_overrides, f"runtime.runs_dir={runs}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(random.Random(trial).uniform(2.0, 2.0 + uninterrupted_s))  # startup, then anywhere in the run
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        directory = store.run_dir(cfg)
        if store.is_finished(directory):
            print(f"trial {trial}: finished before the kill")
            continue
        killed += 1
        found = checkpoint.load(directory, identity(cfg))
        at = found[0]["step"] if found else 0
        same = metrics(run(cfg)).equals(reference)
        identical += same
        print(f"trial {trial}: killed, resumed at step {at}: {'identical' if same else 'DIFFERENT'}", flush=True)
    print(f"{identical} of {killed} killed runs ended with metrics identical to the uninterrupted run "
          f"({trials - killed} of {trials} trials finished before their kill)")
    return identical, killed


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10, sys.argv[2:])
