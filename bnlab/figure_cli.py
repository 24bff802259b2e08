"""`bnlab-figure NAME` draws a figure from runs already in the store; `bnlab-figure NAME --train`
(what `make reproduce-NAME` calls) first trains the runs that are missing: here, `--jobs` at a time, or
with `--launcher slurm` as one SLURM job array, waiting for it before drawing.

    bnlab-figure figure3 --scale smoke                 # redraw, no training
    bnlab-figure all --scale paper --seeds 3 --train   # every figure, training what is missing
    bnlab-figure lp-training --scale smoke train.steps=300 --train   # any config override
    bnlab-figure figure4 --train --launcher slurm hydra.launcher.partition=gpu   # hydra.*: the launcher's
    bnlab-figure --list                                # the figures, what each reproduces, their cost

With BNLAB_DRY_RUN=1 in the environment it checks everything (configs, launcher, data) and says what it
would train, then stops: `BNLAB_DRY_RUN=1 make reproduce-all SCALE=paper` costs seconds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from omegaconf import OmegaConf

from bnlab import store
from bnlab.config import CONFIG_DIR, dry_run, probes_enabled, trajectory_identity
from bnlab.jobcontrol import die_with_parent


class LaunchError(RuntimeError):
    """Runs handed to a launcher did not all finish."""


def launchers() -> list[str]:
    """`local` (a process pool here) and every launcher config in configs/hydra/launcher."""
    return ["local"] + sorted(p.stem for p in (CONFIG_DIR / "hydra" / "launcher").glob("*.yaml") if p.stem != "local")


def _figures():
    from experiments import FIGURES

    return FIGURES


_POOL_WORKER = False


def _pool_worker_init() -> None:
    global _POOL_WORKER
    _POOL_WORKER = True
    die_with_parent()


def _train_group(containers: list[dict]) -> list[tuple[str, str, float]]:
    """Train one run, or several stacked (bnlab.stack): [(directory, status, seconds)] per run."""
    from bnlab.stack import run_stacked

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


def _trajectory(cfg) -> str:
    return json.dumps(trajectory_identity(cfg), sort_keys=True)


# Seconds per training step of one run on a 2-core x86 CPU while another run trains beside it (how
# `make reproduce-* JOBS=2` trains): wall_time_s / steps from the run summaries of
# `make reproduce-all SCALE=smoke` (VGG at width 1/8) and of the full-width calibration runs, which set
# VGG_WIDTH_EXPONENT (3.1 s a step at width 1 against 0.107 at 1/8: small convolutions do not use the
# cores fully, so the cost grows slower than width squared). Probes every 40 (VGG) or 20 (DLN) steps.
STEP_SECONDS = {"vgg": {"none": 0.085, "batch": 0.107, "l1": 0.125, "l2": 0.121, "linf": 0.151},
                "dln": {"none": 0.0035, "batch": 0.0065, "l1": 0.012, "l2": 0.013, "linf": 0.0135}}
PROBED_STEP_FACTOR = {"vgg": 1.35, "dln": 2.0}
NOISE_STEP_FACTOR = 1.45  # noisy BatchNorm, or its noise alone: drawing the noise and probing it
VGG_WIDTH_EXPONENT = 1.6


def estimated_seconds(cfg) -> float:
    """A run's training time on a 2-core CPU, one of two runs at a time (the cost model above)."""
    model = cfg.model.name
    per_step = STEP_SECONDS[model].get(cfg.norm.kind, max(STEP_SECONDS[model].values()))
    if model == "vgg":
        per_step *= (cfg.model.width / 0.125) ** VGG_WIDTH_EXPONENT
    if cfg.norm.noise.enabled:
        per_step *= NOISE_STEP_FACTOR
    return cfg.train.steps * per_step * (PROBED_STEP_FACTOR[model] if probes_enabled(cfg) else 1.0)


def prepare_data(cfgs) -> None:
    """Decode each dataset the runs need into its cache once, here, before any run starts: a missing or
    corrupted dataset fails now, and parallel runs do not all decode it."""
    from bnlab import cifar10

    seen = set()
    for cfg in cfgs:
        d = cfg.data
        if d.name != "cifar10" or (d.root, d.source, d.cache_dir) in seen:
            continue
        seen.add((d.root, d.source, d.cache_dir))
        cifar10.prepare(d.root, d.source, d.cache_dir, d.download, d.sha256)


def _warn_if_slow(cfgs) -> None:
    """Full-width VGG on a CPU takes hours per run: say so first."""
    from bnlab.train import resolve_device

    heavy = [c for c in cfgs if c.model.name == "vgg" and resolve_device(c.runtime.device).type == "cpu"
             and c.model.width >= 0.5]
    if heavy:
        took = _duration(sum(estimated_seconds(c) for c in heavy) / 2)  # two at a time on 2 cores
        print(f"warning: {len(heavy)} VGG runs at width >= 0.5 will train on the CPU (no GPU here): roughly "
              f"{took} on 2 cores. Paper-scale VGG needs a GPU; SCALE=smoke runs every figure on a CPU.",
              file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if seconds >= 5400:
        return f"{seconds / 3600:.0f} hours"
    return f"{max(1, round(seconds / 60))} min"


def fresh_runs(cfgs) -> list:
    """The runs `cfgs` need trained from nothing: distinct runs, less the unprobed ones that a probed run
    of the same trajectory serves."""
    needed = {str(store.run_dir(cfg)): cfg for cfg in cfgs}
    probed = {_trajectory(c) for c in needed.values() if probes_enabled(c)}
    return [c for c in needed.values() if probes_enabled(c) or _trajectory(c) not in probed]


def figure_costs(name: str) -> dict:
    """{scale: {seeds, runs, steps, cpu_seconds}} for the figure at each scale's default seeds, cached under
    the data cache by a digest of the configs (composing every run's config takes Hydra seconds)."""
    import hashlib

    from bnlab.config import compose
    from experiments.common import sweep

    digest = hashlib.sha256()
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        digest.update(path.read_bytes())
    digest.update(json.dumps([STEP_SECONDS, PROBED_STEP_FACTOR, NOISE_STEP_FACTOR, VGG_WIDTH_EXPONENT]).encode())
    cache = Path(os.environ.get("BNLAB_CACHE", "cache")) / "figure-costs" / f"{name}-{digest.hexdigest()[:16]}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    costs = {}
    for scale in ("smoke", "paper"):
        seeds = compose([f"scale={scale}"]).scale.seeds
        runs = fresh_runs(sweep(name, scale, 1))  # seeds repeat the same runs
        costs[scale] = {"seeds": seeds, "runs": len(runs) * seeds,
                        "steps": sum(c.train.steps for c in runs) * seeds,
                        "cpu_seconds": sum(estimated_seconds(c) for c in runs) * seeds}
    cache.parent.mkdir(parents=True, exist_ok=True)
    store.atomic_write(cache, lambda p: p.write_text(json.dumps(costs)))
    return costs


def list_figures() -> None:
    """Each figure: what it reproduces (its module's docstring) and its cost at each scale."""
    import textwrap

    print("bnlab-figure NAME [--scale smoke|paper] --train: the figures, what each reproduces, and the runs it\n"
          "trains at each scale's default seeds, with their time on a 2-core CPU (two runs at a time; paper-scale\n"
          "VGG is meant for a GPU). Figures share runs, so `all` costs less than the sum.\n")
    for name, module_name in _figures().items():
        module = importlib.import_module(module_name)
        about = " ".join((module.__doc__ or "").strip().split("\n\n")[0].split())
        print(name)
        print(textwrap.fill(about, 110, initial_indent="    ", subsequent_indent="    "))
        costs = figure_costs(name)
        for scale, c in costs.items():
            print(f"    {scale}: {c['runs']} runs ({c['seeds']} seed{'s' if c['seeds'] > 1 else ''}), "
                  f"{c['steps']:,} steps, about {_duration(c['cpu_seconds'] / 2)} on 2 CPU cores")
        print(flush=True)


def report_plan(cfgs, launcher: str) -> None:
    """What `--train` would do, without doing it: the runs, their estimated time, where the data comes from."""
    from bnlab import cifar10

    needed, stored, twins, todo = plan(cfgs)
    print(f"dry run: {len(needed)} distinct runs needed, {len(stored)} already in the store, {len(twins)} served by "
          f"a probed twin, {len(todo)} would train (launcher {launcher}; about "
          f"{_duration(sum(estimated_seconds(c) for c in todo.values()) / 2)} on 2 CPU cores)")
    for d in sorted({(c.data.root, c.data.source, c.data.download, c.data.sha256) for c in todo.values()
                     if c.data.name == "cifar10"}):
        print(f"  data: would {cifar10.check(*d)}")


def plan(cfgs) -> tuple[dict, set, set, dict]:
    """What training `cfgs` takes: the distinct runs needed ({directory: cfg}; figures share runs), those
    already finished in the store, the unprobed ones a probed twin of the same trajectory will serve, and
    the rest, to train ({directory: cfg})."""
    needed = {str(store.run_dir(cfg)): cfg for cfg in cfgs}
    stored = {d for d, cfg in needed.items() if store.is_finished(store.find_run(cfg))}
    probed = {_trajectory(c) for d, c in needed.items() if d not in stored and probes_enabled(c)}
    twins = {d for d, c in needed.items() if d not in stored and not probes_enabled(c) and _trajectory(c) in probed}
    todo = {d: cfg for d, cfg in needed.items() if d not in stored and d not in twins}
    return needed, stored, twins, todo


def train_missing(cfgs, jobs: int, launcher: str = "local", launcher_overrides=(), name: str = "runs",
                  pack: int = 1) -> None:
    """Train every run of `cfgs` not yet finished in the store: `jobs` processes at a time here, or through
    a Hydra launcher (SLURM). A run without probes is not trained when a probed run of the same trajectory
    is stored or about to be trained: the store serves it from that twin (bnlab.store.find_run)."""
    needed, stored, twins, todo = plan(cfgs)
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
    from bnlab.stack import stack_groups

    groups = stack_groups(containers)  # DLN runs that differ only in seed train as one stacked model
    if len(groups) < len(containers):
        print(f"  as {len(groups)} jobs: runs that differ only in their seed train stacked", flush=True)
    started = time.perf_counter()
    if jobs == 1:
        results = (_train_group(g) for g in groups)
    else:
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=_pool_worker_init)
        results = (f.result() for f in as_completed([pool.submit(_train_group, g) for g in groups]))
    done = 0
    for group_results in results:
        for directory, status, seconds in group_results:
            done += 1
            print(f"[{done}/{len(containers)}] {status:8s} {seconds:6.1f} s  {Path(directory).name}", flush=True)
    print(f"trained {len(containers)} runs in {time.perf_counter() - started:.0f} s", flush=True)


def launch(containers: list[dict], launcher: str, overrides: list[str], name: str, pack: int = 1) -> None:
    """Hand the runs to a Hydra launcher as one sweep over the entries of a run list (on SLURM: one job
    array, a task per `pack` runs, trained at once) and wait for it. The list holds each run's full config,
    so the tasks run exactly these runs however the figure composed them. Runs come longest first, so the
    runs packed together take about as long as each other."""
    from datetime import datetime

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
    store.atomic_write(run_list, lambda p: p.write_text(json.dumps(groups, indent=1)))
    # Not `-m bnlab.train`: submitit pickles the task function, and one defined in __main__ goes by value.
    command = [sys.executable, "-c", "from bnlab.train import main; main()", "--multirun", f"hydra/launcher={launcher}",
               f"hydra.sweep.dir={sweep_dir}", f"hydra.job.name=bnlab-{name}", f"runtime.run_list={run_list}",
               f"runtime.run_index=range(0,{len(groups)})", *overrides]
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


def check_launcher(launcher: str, overrides: list[str]) -> None:
    """Compose the launcher's config with its overrides now, so that a misspelt setting fails before any
    data is prepared or job submitted."""
    from bnlab.config import compose

    if launcher != "local":
        compose([f"hydra/launcher={launcher}", *overrides], with_hydra=True)


def draw(name: str, scale: str, seeds: int, overrides: list[str], out_root: Path) -> list:
    from experiments.common import load, sweep, write_results

    module = importlib.import_module(_figures()[name])
    runs = load(sweep(name, scale, seeds, overrides))
    out_dir = out_root / scale
    out_dir.mkdir(parents=True, exist_ok=True)
    module.draw(runs, out_dir / f"{name}.png")
    claims = module.claims(runs)
    notes = " ".join((module.__doc__ or "").strip().split("\n\n")[0].split())
    datasets = sorted({r.summary.get("data", "?") for r in runs})
    write_results(out_dir, name, claims, notes, seeds, scale, datasets)
    print(f"\n{name}: drew {out_dir / (name + '.png')} from {len(runs)} runs")
    for c in claims:
        print(f"  [{'holds' if c.holds else 'DOES NOT HOLD'}] {c.claim}\n      measured: {c.measured}")
    if not claims:
        print("  (no claims attached to this figure)")
    return claims


def main(argv: list[str] | None = None) -> int:
    figures = _figures()
    parser = argparse.ArgumentParser(prog="bnlab-figure", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help=f"a figure ({', '.join(figures)}) or 'all'")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. train.steps=300")
    parser.add_argument("--scale", default="paper", help="smoke or paper (default: paper)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per config (default: the scale's)")
    parser.add_argument("--train", action="store_true", help="train missing runs first")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs trained at once (local)")
    parser.add_argument("--pack", type=int, default=1,
                        help="runs per task of the job array, trained at once (launchers other than local)")
    parser.add_argument("--launcher", default="local", choices=launchers(),
                        help="local: train here, --jobs at a time; slurm: one SLURM job array (configs/hydra/launcher)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: results)")
    parser.add_argument("--list", action="store_true",
                        help="list the figures: what each reproduces and its cost at each scale")
    args = parser.parse_intermixed_args(argv)
    if args.list:
        list_figures()
        return 0
    if args.name is None:
        parser.error("name a figure, or 'all' (bnlab-figure --list shows them)")

    names = list(figures) if args.name == "all" else [args.name]
    unknown = [n for n in names if n not in figures]
    if unknown:
        parser.error(f"unknown figure {unknown[0]!r}; choose one of: all, {', '.join(figures)}")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"overrides look like key=value; got {bad[0]!r}")
    launcher_overrides = [o for o in args.overrides if o.startswith(("hydra.", "hydra/"))]
    run_overrides = [o for o in args.overrides if o not in launcher_overrides]
    if launcher_overrides and not (args.train and args.launcher != "local"):
        parser.error(f"{launcher_overrides[0]!r} sets the launcher: it goes with --train --launcher slurm (or another "
                     "configs/hydra/launcher config), not with local training or drawing")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.pack < 1:
        parser.error(f"--pack must be at least 1, got {args.pack}")

    from bnlab.cifar10 import DataError
    from bnlab.config import ConfigError, compose, validate
    from experiments.common import MissingRuns, sweep

    try:
        check_launcher(args.launcher, launcher_overrides)
        # the scale's own settings only: other overrides may name keys of one model's configs (data.download)
        scale_cfg = compose([f"scale={args.scale}", *[o for o in run_overrides if o.startswith("scale.")]])
        seeds = args.seeds if args.seeds is not None else scale_cfg.scale.seeds
        if seeds < 1:
            parser.error(f"--seeds must be at least 1, got {seeds}")
        cfgs = {n: sweep(n, args.scale, seeds, run_overrides) for n in names}
        for cfg in (c for group in cfgs.values() for c in group):
            validate(cfg)  # every run checked before any of them starts
        if dry_run():
            report_plan([c for group in cfgs.values() for c in group], args.launcher)
            return 0
        if args.train:
            train_missing([c for group in cfgs.values() for c in group], args.jobs, args.launcher,
                          launcher_overrides, args.name, args.pack)
        for name in names:
            draw(name, args.scale, seeds, run_overrides, args.out)
    except (MissingRuns, ConfigError, DataError, LaunchError) as exc:
        print(f"bnlab-figure: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # Hydra's composition errors name the bad group or key
        if type(exc).__module__.startswith(("hydra", "omegaconf")):
            print(f"bnlab-figure: {exc}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
