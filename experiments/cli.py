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
import hashlib
import json
import os
import sys
import textwrap
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from bnlab.config import CONFIG_DIR, ConfigError, compose, dry_run, validate
from bnlab.data.cifar10 import DataError
from bnlab.launch.costs import COST_MODEL, estimated_seconds
from bnlab.launch.plan import duration, fresh_runs, report_plan, train_missing
from bnlab.launch.slurm import LaunchError, check_launcher, launchers
from bnlab.store.checkpoint import CheckpointError
from bnlab.util.devices import DeviceError
from bnlab.util.files import atomic_write
from experiments import figure_group, figure_module, figure_names
from experiments.lib.listing import listing_cache
from experiments.lib.plotting import STYLE
from experiments.lib.report import write_results
from experiments.lib.runs import MissingRuns, changes_runs, load, sweep


def figure_costs(name: str) -> dict:
    """{scale: {seeds, runs, steps, cpu_seconds}} for the figure at each scale's default seeds, cached under
    the data cache by a digest of the configs (composing every run's config takes Hydra seconds)."""
    digest = hashlib.sha256()
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        digest.update(path.read_bytes())
    digest.update(json.dumps(COST_MODEL).encode())
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
    atomic_write(cache, lambda p: p.write_text(json.dumps(costs)))
    return costs


def list_figures() -> None:
    """Each figure: what it reproduces (its module's docstring) and its cost at each scale. Saved where
    experiments.lib.entry finds it, so that the next listing needs none of this."""
    lines = ["bnlab-figure NAME [--scale smoke|paper] --train: the figures, what each reproduces, and the runs it\n"
             "trains at each scale's default seeds, with their time on a 2-core CPU (two runs at a time; paper-scale\n"
             "VGG is meant for a GPU). Figures share runs, so `all` costs less than the sum. `all` draws every\n"
             f"figure but {', '.join(figure_group(figure_names(), 'beyond'))}: `beyond` draws those.\n"]
    print(lines[0], flush=True)
    for name in figure_names():
        about = figure_about(name)
        block = [name, textwrap.fill(about, 110, initial_indent="    ", subsequent_indent="    ")]
        for scale, c in figure_costs(name).items():
            block.append(f"    {scale}: {c['runs']} runs ({c['seeds']} seed{'s' if c['seeds'] > 1 else ''}), "
                         f"{c['steps']:,} steps, about {duration(c['cpu_seconds'] / 2)} on 2 CPU cores")
        block.append("")
        print("\n".join(block), flush=True)
        lines += block
    saved = listing_cache()
    saved.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(saved, lambda p: p.write_text("\n".join(lines) + "\n"))


def figure_about(name: str) -> str:
    """What the figure reproduces: the first paragraph of its module's docstring, on one line."""
    return " ".join((figure_module(name).__doc__ or "").strip().split("\n\n")[0].split())


def draw(name: str, scale: str, seeds: int, cfgs: list, out_root: Path, overrides: list[str] = ()) -> list:
    """Draw figure `name` from its runs (`cfgs`, its sweep) into out_root/scale, judge its claims and record
    them there."""
    module = figure_module(name)
    runs = load(cfgs)
    out_dir = out_root / scale
    out_dir.mkdir(parents=True, exist_ok=True)
    matplotlib.use("Agg")  # files only, also where a display is available
    with plt.style.context(STYLE):
        module.draw(runs, out_dir / f"{name}.png")
    claims = module.claims(runs)
    reports = module.reports(runs) if hasattr(module, "reports") else []
    datasets = sorted({r.summary.get("data", "?") for r in runs})
    write_results(out_dir, name, claims, figure_about(name), seeds, scale, datasets, figure_names(), reports,
                  overrides)
    print(f"\n{name}: drew {out_dir / (name + '.png')} from {len(runs)} runs ({seeds} seed{'s' if seeds > 1 else ''})")
    for c in claims:
        per_seed = ", ".join(c.outcomes["seeds"].values())
        print(f"  [{c.verdict.upper()}] {c.claim}\n      measured: {c.measured}\n      per seed: {per_seed}; "
              f"on the mean: {c.outcomes['mean']}")
    for r in reports:
        print(f"  [reported] {r.what}: {r.measured}")
    if not claims:
        print("  (no claims attached to this figure)")
    return claims


def main(argv: list[str] | None = None) -> int:
    figures = figure_names()
    parser = argparse.ArgumentParser(prog="bnlab-figure", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help=f"a figure ({', '.join(figures)}), 'all' (every figure but those "
                        f"beyond the paper's questions: {', '.join(figure_group(figures, 'beyond'))}) or 'beyond' "
                        "(those)")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. train.steps=300")
    parser.add_argument("--scale", default="paper", help="smoke or paper (default: paper)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per config (default: the scale's)")
    parser.add_argument("--train", action="store_true", help="train missing runs first")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs trained at once (local)")
    parser.add_argument("--pack", type=int, default=1,
                        help="runs per task of the job array, trained at once (launchers other than local)")
    parser.add_argument("--launcher", default="local", choices=launchers(),
                        help="local: train here, --jobs at a time; slurm: one SLURM job array (configs/hydra/launcher)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: results, the committed one; required with overrides that "
                             "change the runs)")
    parser.add_argument("--list", action="store_true",
                        help="list the figures: what each reproduces and its cost at each scale")
    args = parser.parse_intermixed_args(argv)
    if args.list:
        list_figures()
        return 0
    if args.name is None:
        parser.error("name a figure, or 'all' (bnlab-figure --list shows them)")

    names = figure_group(figures, args.name) if args.name in ("all", "beyond") else [args.name]
    unknown = [n for n in names if n not in figures]
    if unknown:
        parser.error(f"unknown figure {unknown[0]!r}; choose one of: all, beyond, {', '.join(figures)}")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"overrides look like key=value; got {bad[0]!r}")
    launcher_overrides = [o for o in args.overrides if o.startswith(("hydra.", "hydra/"))]
    run_overrides = [o for o in args.overrides if o not in launcher_overrides]
    if launcher_overrides and not (args.train and args.launcher != "local"):
        parser.error(f"{launcher_overrides[0]!r} sets the launcher: it goes with --train --launcher slurm (or another "
                     "configs/hydra/launcher config), not with local training or drawing")
    changing = [o for o in run_overrides if changes_runs(o)]
    if changing and args.out is None:
        parser.error(f"{' '.join(changing)} changes the runs: their figures and claims would overwrite the committed "
                     f"results/{args.scale}/. Say where they go instead, e.g. --out /tmp/bnlab-try")
    args.out = args.out or Path("results")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.pack < 1:
        parser.error(f"--pack must be at least 1, got {args.pack}")

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
        for name in names:  # cfgs composed once, above: Hydra takes seconds per figure
            draw(name, args.scale, seeds, cfgs[name], args.out, changing)
    except (MissingRuns, ConfigError, DataError, LaunchError, DeviceError, CheckpointError) as exc:
        print(f"bnlab-figure: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # every run in training has checkpointed at the step it was in
        print("bnlab-figure: interrupted; the runs checkpointed, and the same command resumes them", file=sys.stderr)
        return 130
    except Exception as exc:  # Hydra's composition errors name the bad group or key
        if type(exc).__module__.startswith(("hydra", "omegaconf")):
            print(f"bnlab-figure: {exc}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
