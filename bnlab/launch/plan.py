"""Which runs a set of run configs still needs trained, and training them: here (local) or through a
Hydra launcher (slurm). Figures share runs, and a run is served by another of the same trajectory whose
probes cover its own (an unprobed run by any probed one), so the plan trains each distinct run once."""

from __future__ import annotations

import json
import sys

from omegaconf import OmegaConf

from bnlab import store
from bnlab.config import probes_cover, trajectory_identity
from bnlab.data import cifar10
from bnlab.launch.costs import SLOW_ON_CPU_SECONDS, estimated_seconds
from bnlab.launch.local import train_pool
from bnlab.launch.slurm import launch
from bnlab.util.devices import check_processes_per_gpu, resolve_device


def _trajectory(cfg) -> str:
    return json.dumps(trajectory_identity(cfg), sort_keys=True)


def plan(cfgs) -> tuple[dict, set, set, dict]:
    """What training `cfgs` takes: the distinct runs needed ({directory: cfg}; figures share runs), those
    already finished in the store, those another run of the same trajectory with covering probes will serve, and
    the rest, to train ({directory: cfg})."""
    needed = {str(store.run_dir(cfg)): cfg for cfg in cfgs}
    stored = {d for d, cfg in needed.items() if store.is_finished(store.find_run(cfg))}
    twins = _served_by_twins({d: c for d, c in needed.items() if d not in stored})
    todo = {d: cfg for d, cfg in needed.items() if d not in stored and d not in twins}
    return needed, stored, twins, todo


def fresh_runs(cfgs) -> list:
    """The runs `cfgs` need trained into an empty store: distinct runs, less those that another run of the
    same trajectory with covering probes serves."""
    needed = {str(store.run_dir(cfg)): cfg for cfg in cfgs}
    twins = _served_by_twins(needed)
    return [c for d, c in needed.items() if d not in twins]


def _served_by_twins(pending: dict) -> set:
    """The runs of `pending` ({directory: cfg}) that another run of it with the same trajectory serves: one
    whose probes cover theirs (bnlab.config.probes_cover; its metrics hold theirs, bit for bit)."""
    by_trajectory: dict[str, list] = {}
    for d, c in pending.items():
        by_trajectory.setdefault(_trajectory(c), []).append((d, c))
    # two runs that cover each other (they differ only in the settings of probes both leave off): the first
    # directory in order is trained
    return {d for group in by_trajectory.values() for d, c in group
            if any(other != d and probes_cover(twin, c) and (not probes_cover(c, twin) or other < d)
                   for other, twin in group)}


def duration(seconds: float) -> str:
    if seconds >= 5400:
        return f"{seconds / 3600:.0f} hours"
    return f"{max(1, round(seconds / 60))} min"


def prepare_data(cfgs) -> None:
    """Decode each dataset the runs need into its cache once, here, before any run starts: a missing or
    corrupted dataset fails now, and parallel runs do not all decode it."""
    seen = set()
    for cfg in cfgs:
        d = cfg.data
        if d.name != "cifar10" or (d.root, d.source, d.cache_dir) in seen:
            continue
        seen.add((d.root, d.source, d.cache_dir))
        cifar10.prepare(d.root, d.source, d.cache_dir, d.download, d.sha256)


def report_plan(cfgs, launcher: str) -> None:
    """What training `cfgs` would do, without doing it: the runs, their estimated time, where the data
    comes from."""
    needed, stored, twins, todo = plan(cfgs)
    print(f"dry run: {len(needed)} distinct runs needed, {len(stored)} already in the store, {len(twins)} served by "
          f"a probed twin, {len(todo)} would train (launcher {launcher}; about "
          f"{duration(sum(estimated_seconds(c) for c in todo.values()) / 2)} on 2 CPU cores)")
    for directory, cfg in sorted(todo.items()):
        print(f"  would train {directory} (about {duration(estimated_seconds(cfg))} on a CPU core)")
    for d in sorted({(c.data.root, c.data.source, c.data.download, c.data.sha256) for c in todo.values()
                     if c.data.name == "cifar10"}):
        print(f"  data: would {cifar10.check(*d)}")


def _warn_if_slow(cfgs) -> None:
    """Runs of hours each on a CPU (a full-width VGG16): say so first."""
    heavy = [c for c in cfgs if resolve_device(c.runtime.device).type == "cpu"
             and estimated_seconds(c) > SLOW_ON_CPU_SECONDS]
    if heavy:
        took = duration(sum(estimated_seconds(c) for c in heavy) / 2)  # two at a time on 2 cores
        print(f"warning: {len(heavy)} runs of over {duration(SLOW_ON_CPU_SECONDS)} each will train on the CPU (no "
              f"GPU here): roughly {took} on 2 cores. Paper-scale VGG needs a GPU; SCALE=smoke runs every figure "
              f"on a CPU.", file=sys.stderr, flush=True)


def train_missing(cfgs, jobs: int, launcher: str = "local", launcher_overrides=(), name: str = "runs",
                  pack: int = 1) -> None:
    """Train every run of `cfgs` not yet finished in the store: `jobs` processes at a time here, or through
    a Hydra launcher (SLURM). A run is not trained when a run of the same trajectory whose probes cover its
    own is stored or about to be trained: the store serves it from that twin (bnlab.store.find_run)."""
    needed, stored, twins, todo = plan(cfgs)
    if launcher == "local":  # here, the device must work before any data is prepared (a task checks its own)
        for device in sorted({str(c.runtime.device) for c in todo.values()}):
            resolve_device(device)
            check_processes_per_gpu(min(jobs, len(todo)), device, f"--jobs {jobs}")
    prepare_data(todo.values())
    where = f"{jobs} at a time" if launcher == "local" else f"{pack} per task of one job array, launcher {launcher}"
    print(f"{len(needed)} distinct runs needed: {len(stored)} already in the store, {len(twins)} to be served by a "
          f"probed run of the same trajectory, {len(todo)} to train ({where})", flush=True)
    if not todo:
        return
    containers = []
    for cfg in sorted(todo.values(), key=estimated_seconds, reverse=True):  # longest first: no idle core at the end
        c = OmegaConf.to_container(cfg)
        c["runtime"]["progress"] = launcher == "local" and jobs == 1 and sys.stderr.isatty()
        containers.append(c)
    if launcher != "local":
        launch(containers, launcher, list(launcher_overrides), name, pack)
        return
    _warn_if_slow(todo.values())
    train_pool(containers, jobs)
