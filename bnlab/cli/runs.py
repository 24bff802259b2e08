"""`bnlab-runs`: find, look at and compare the runs in the run store, without writing code.

    bnlab-runs ls                                   # every run: key, model, norm, lr, seed, scale, status, ...
    bnlab-runs ls model=dln norm=batch status=finished   # filters: a config key (or model, norm, lr, scale) = value
    bnlab-runs show dln-batch-lr1e-06-seed0         # one run (a key or its start): config, summary, its files
    bnlab-runs compare model=dln lr=1e-06 --metric loss --out compare.png   # metrics side by side, and a plot
    bnlab-runs lookup model=vgg norm=batch optim.lr=0.1  # the run `bnlab-train <the same overrides>` makes

The store is `runtime.runs_dir` (`$BNLAB_RUNS` or ./runs); `--runs DIR` names another.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import yaml

# Short names a filter may use for the config keys a reader thinks in.
ALIASES = {"model": "model.name", "norm": "norm.kind", "lr": "optim.lr", "scale": "scale.name", "data": "data.name"}
COLUMNS = ("key", "model", "norm", "lr", "seed", "scale", "status", "steps", "final loss", "test acc", "wall")


def _select(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _matches(value, wanted: str) -> bool:
    if value is None:
        return wanted in ("null", "None")
    try:
        return math.isclose(float(value), float(wanted), rel_tol=1e-9) and not isinstance(value, bool)
    except (TypeError, ValueError):
        return str(value).lower() == wanted.lower()


class Run:
    """A run directory of the store: its config and summary, read as plain data (fast for a whole store)."""

    def __init__(self, directory: Path):
        from bnlab.store import read_summary

        self.directory = directory
        self.key = directory.name
        config_path = directory / "config.yaml"
        self.config = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
        self.summary = read_summary(directory) or {}

    def get(self, name: str):
        if name == "status":
            return self.summary.get("status", "unfinished")
        if name == "norm":  # noisy BatchNorm reads as batch+noise, as the run keys spell it
            kind = _select(self.config, "norm.kind")
            return f"{kind}+noise" if _select(self.config, "norm.noise.enabled") else kind
        return _select(self.config, ALIASES.get(name, name))

    def row(self) -> dict:
        def number(value, fmt: str) -> str:
            return format(value, fmt) if isinstance(value, int | float) and not isinstance(value, bool) else "-"

        s = self.summary
        return {"key": self.key, "model": self.get("model"), "norm": self.get("norm"),
                "lr": number(self.get("lr"), "g"), "seed": self.get("seed"), "scale": self.get("scale"),
                "status": self.get("status"),
                "steps": s.get("steps_completed", "-"), "final loss": number(s.get("final_loss"), ".4g"),
                "test acc": number(s.get("final_eval_test_accuracy"), ".1f"),
                "wall": number(s.get("wall_time_s"), ".0f") + " s" * isinstance(s.get("wall_time_s"), int | float)}


def all_runs(root: Path) -> list[Run]:
    return [Run(d) for d in sorted(root.glob("*/*")) if d.is_dir() and (d / "config.yaml").exists()]


def select(runs: list[Run], terms: list[str]) -> list[Run]:
    """Runs matching every `key=value` filter; other terms name runs by their key or its start."""
    filters = [t.split("=", 1) for t in terms if "=" in t]
    names = [t for t in terms if "=" not in t]
    out = [r for r in runs if all(_matches(r.get(k), v) for k, v in filters)]
    if names:
        out = [r for r in out if any(r.key.startswith(n) or str(r.directory) == n for n in names)]
    return out


def _flat(node, prefix: str = "") -> dict:
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.").items()}


def differences(runs: list[Run]) -> dict[str, str]:
    """Per run, the settings in which the runs differ (what they compute, not where or how they ran): the
    model, norm, lr and seed columns say the rest."""
    shown = {"model.name", "norm.kind", "norm.noise.enabled", "optim.lr", "seed", "data.seed"}
    flat = {r.key: {k: v for k, v in _flat(r.config).items()
                    if k.split(".")[0] not in ("runtime", "logger", "experiment_name", "hydra") and k not in shown}
            for r in runs}
    keys = sorted({k for f in flat.values() for k in f})
    varying = [k for k in keys if len({repr(f.get(k)) for f in flat.values()}) > 1]
    return {key: " ".join(f"{k}={f.get(k)}" for k in varying) or "-" for key, f in flat.items()}


def table(rows: list[dict], columns=COLUMNS) -> str:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def cmd_ls(runs: list[Run], args) -> int:
    chosen = select(runs, args.terms)
    if not chosen:
        print(f"no runs in {args.runs} match {' '.join(args.terms) or '(no filter)'}", file=sys.stderr)
        return 1
    print(table([r.row() for r in chosen]))
    print(f"{len(chosen)} of {len(runs)} runs in {args.runs}")
    return 0


def cmd_show(runs: list[Run], args) -> int:
    chosen = select(runs, args.terms)
    if len(chosen) != 1:
        keys = ", ".join(r.key for r in chosen[:5]) or "none"
        print(f"bnlab-runs show: {len(chosen)} runs match ({keys}); name one", file=sys.stderr)
        return 1
    run = chosen[0]
    print(f"run {run.key}\ndirectory {run.directory}")
    for name in sorted(p.name for p in run.directory.iterdir()):
        print(f"  {name}")
    print("\nsummary:")
    print(yaml.safe_dump({k: v for k, v in run.summary.items()}, sort_keys=False).rstrip())
    print("\nconfig:")
    print(yaml.safe_dump(run.config, sort_keys=False).rstrip())
    return 0


def cmd_compare(runs: list[Run], args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bnlab.store import is_finished, read_metrics

    chosen = [r for r in select(runs, args.terms) if is_finished(r.directory)]
    if not chosen:
        print(f"bnlab-runs compare: no finished runs match {' '.join(args.terms)}", file=sys.stderr)
        return 1
    fig, ax = plt.subplots(figsize=(9, 5.5), constrained_layout=True)
    rows, differs = [], differences(chosen)
    for run in chosen:
        m = read_metrics(run.directory)
        m = m[(m.metric.astype(str) == args.metric) & (m.layer == args.layer)]
        if m.empty:
            print(f"  {run.key}: no {args.metric!r} at layer {args.layer}", file=sys.stderr)
            continue
        series = m.set_index("step")["value"]
        label = f"{run.get('model')} {run.get('norm')} lr {run.get('lr'):g} seed {run.get('seed')}"
        ax.plot(series.index, series.values, label=label + ("" if differs[run.key] == "-" else f", {differs[run.key]}"),
                lw=1)
        rows.append({**run.row(), "first": f"{series.iloc[0]:.4g}", "last": f"{series.iloc[-1]:.4g}",
                     "min": f"{series.min():.4g}", "max": f"{series.max():.4g}", "differs in": differs[run.key]})
    if not rows:
        print(f"bnlab-runs compare: none of the {len(chosen)} runs logged {args.metric!r} at layer {args.layer} "
              f"(`bnlab-runs show RUN` lists a run's files; metric names are in bnlab/store/runs.py)", file=sys.stderr)
        return 1
    print(table(rows, ("key", "first", "last", "min", "max", "differs in")))
    positive = all(float(r["min"]) > 0 for r in rows)
    if args.log or (args.log is None and positive and max(float(r["max"]) for r in rows) >
                    100 * min(float(r["min"]) for r in rows)):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(args.metric + (f" (layer {args.layer})" if args.layer else ""))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.14))  # below the axes: labels can be long
    ax.grid(alpha=0.3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out} ({len(rows)} runs)")
    return 0


def cmd_lookup(args) -> int:
    from bnlab.config import ConfigError, compose, validate
    from bnlab.store import find_run, is_finished, read_summary, run_dir

    try:
        cfg = compose([*args.terms, *([f"runtime.runs_dir={args.runs}"] if args.runs else [])])
        validate(cfg)
    except ConfigError as exc:
        print(f"bnlab-runs: {exc}", file=sys.stderr)
        return 2
    own, found = run_dir(cfg), find_run(cfg)
    print(f"run {own.name}\ndirectory {own}")
    if is_finished(found):
        via = "" if found == own else f" (served by {found.name}, a run of the same trajectory whose probes cover it)"
        print(f"status {read_summary(found)['status']}{via}")
    else:
        print("status not in the store yet" + (" (unfinished: it resumes from its checkpoint)" if own.exists() else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bnlab-runs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("ls", "show", "compare", "lookup"))
    parser.add_argument("terms", nargs="*", help="filters key=value, run keys (or their start); lookup: overrides")
    parser.add_argument("--runs", type=Path, default=None, help="the run store (default: runtime.runs_dir)")
    parser.add_argument("--metric", default="loss", help="compare: the metric to plot (default loss)")
    parser.add_argument("--layer", type=int, default=0, help="compare: the layer of a per-layer metric (0: model)")
    parser.add_argument("--log", action=argparse.BooleanOptionalAction, default=None,
                        help="compare: log-scale y (default: when positive and spanning over 100x)")
    parser.add_argument("--out", type=Path, default=Path("compare.png"), help="compare: the plot (default compare.png)")
    args = parser.parse_intermixed_args(argv)
    if args.command == "lookup":
        return cmd_lookup(args)
    if args.runs is None:
        from bnlab.config import compose

        args.runs = Path(compose(["logger=none"]).runtime.runs_dir).expanduser()
    if not args.runs.is_dir():  # nothing trained yet: an empty listing, not an error
        print(f"bnlab-runs: no runs at {args.runs} yet (train something first, or point --runs / BNLAB_RUNS at a "
              f"run store)", file=sys.stderr)
        return 0 if args.command == "ls" else 1
    runs = all_runs(args.runs)
    return {"ls": cmd_ls, "show": cmd_show, "compare": cmd_compare}[args.command](runs, args)


if __name__ == "__main__":
    sys.exit(main())
