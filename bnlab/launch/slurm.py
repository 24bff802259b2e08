"""Training runs through a Hydra launcher (SLURM): the run list bnlab-figure writes and hands to one job
array, and how each task of the array reads its entry back."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bnlab import store
from bnlab.config import CONFIG_DIR, ConfigError, compose
from bnlab.util.files import atomic_write


class LaunchError(RuntimeError):
    """Runs handed to a launcher did not all finish."""


def launchers() -> list[str]:
    """`local` (a process pool here) and every launcher config in configs/hydra/launcher."""
    return ["local"] + sorted(p.stem for p in (CONFIG_DIR / "hydra" / "launcher").glob("*.yaml") if p.stem != "local")


def check_launcher(launcher: str, overrides: list[str]) -> None:
    """Compose the launcher's config with its overrides now, so that a misspelt setting fails before any
    data is prepared or job submitted."""
    if launcher != "local":
        compose([f"hydra/launcher={launcher}", *overrides], with_hydra=True)


def launch(containers: list[dict], launcher: str, overrides: list[str], name: str, pack: int = 1) -> None:
    """Hand the runs to a Hydra launcher as one sweep over the entries of a run list (on SLURM: one job
    array, a task per `pack` runs, trained at once) and wait for it. The list holds each run's full config,
    so the tasks run exactly these runs however the figure composed them. Runs come longest first, so the
    runs packed together take about as long as each other."""
    def absolute(path):
        return str(Path(path).expanduser().resolve())

    for c in containers:  # tasks may start in another directory; these paths are not part of a run's identity
        c["runtime"]["runs_dir"] = absolute(c["runtime"]["runs_dir"])
        for key in ("root", "cache_dir"):
            if c["data"].get(key):
                c["data"][key] = absolute(c["data"][key])
    runs_root = Path(containers[0]["runtime"]["runs_dir"])
    sweep_dir = runs_root / "hydra" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}-{name}-{launcher}"
    sweep_dir.mkdir(parents=True, exist_ok=True)
    run_list = sweep_dir / "runs.json"
    groups = [containers[i:i + pack] for i in range(0, len(containers), pack)]
    atomic_write(run_list, lambda p: p.write_text(json.dumps(groups, indent=1)))
    # Not `-m bnlab.cli.train`: submitit pickles the task function, and one defined in __main__ goes by value.
    command = [sys.executable, "-c", "from bnlab.cli.train import main; main()", "--multirun",
               f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep_dir}", f"hydra.job.name=bnlab-{name}",
               f"runtime.run_list={run_list}", f"runtime.run_index=range(0,{len(groups)})", *overrides]
    print(f"submitting {len(containers)} runs as {len(groups)} tasks ({run_list}); waiting for them. Interrupting "
          f"this leaves the jobs running: draw later with `bnlab-figure {name}`.", flush=True)
    started = time.perf_counter()
    try:
        returncode = subprocess.run(command).returncode
    except KeyboardInterrupt:
        raise LaunchError(f"stopped waiting; the submitted jobs go on (logs in {sweep_dir}/.submitit). Once they "
                          f"are done, `bnlab-figure {name}` draws the figure from their runs.") from None
    unfinished = [c for c in containers if not store.is_finished(store.find_run(OmegaConf.create(c)))]
    if unfinished:
        raise LaunchError(f"{len(unfinished)} of {len(containers)} runs did not finish (launcher exit code "
                          f"{returncode}); task logs are in {sweep_dir}/.submitit. Run the same command again "
                          f"to train what is missing: interrupted runs resume from their checkpoints.")
    print(f"trained {len(containers)} runs in {time.perf_counter() - started:.0f} s", flush=True)


def listed_runs(cfg: DictConfig) -> list[dict]:
    """Entry `runtime.run_index` of the run list `runtime.run_list` (a JSON list of groups of full run
    configs, written by `launch`): the runs one task of the job array trains, `--pack` of them at once."""
    path, index = Path(cfg.runtime.run_list), cfg.runtime.run_index
    try:
        groups = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError("runtime.run_list", str(path),
                          f"a run list written by bnlab-figure --launcher slurm (this one: {exc})") from exc
    if not isinstance(index, int) or not 0 <= index < len(groups):
        raise ConfigError("runtime.run_index", index, f"0 to {len(groups) - 1}: {path} lists {len(groups)} groups")
    return groups[index]
