"""What every figure module shares: the runs of an experiment's sweep, their metrics, drawing helpers
and the claims table.

A figure is a function of logged runs. `sweep(name, scale, seeds)` expands `configs/experiment/<name>.yaml`
exactly as `bnlab-train -m experiment=<name>` does (Hydra's basic sweeper), so both find the same run
directories; `load(...)` reads them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from bnlab import store  # noqa: E402
from bnlab.config import compose  # noqa: E402

NORM_STYLE = {  # label, colour: the paper's colours where it has them
    "none": ("Standard", "tab:red"),
    "none+noise": ("Standard + noise (no BN)", "tab:gray"),
    "batch": ("Standard + BatchNorm", "tab:blue"),
    "noisy_batch": ('Standard + "Noisy" BatchNorm', "tab:orange"),
    "l1": ("Standard + L1", "tab:green"),
    "l2": ("Standard + L2", "tab:purple"),
    "linf": ("Standard + L∞", "tab:pink"),
}
plt.style.use("seaborn-v0_8-darkgrid")


def sweep(name: str, scale: str, seeds: int, overrides: list[str] = ()) -> list[DictConfig]:
    """Resolved configs of every run of experiment `name` (its hydra.sweeper.params x seeds)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    base = [f"experiment={name}", f"scale={scale}", *overrides]
    hydra_cfg = compose(base, with_hydra=True)
    params = {k: str(v) for k, v in (hydra_cfg.hydra.sweeper.params or {}).items()}
    given = {o.split("=", 1)[0] for o in overrides}
    swept = [f"{k}={v}" for k, v in params.items() if k not in given]
    seed_list = ",".join(str(s) for s in range(seeds))
    parsed = OverridesParser.create().parse_overrides([*base, *swept, f"seed={seed_list}"])
    jobs = BasicSweeper.split_arguments(parsed, None)[0]
    return [compose(job) for job in jobs]


@dataclass
class Run:
    cfg: DictConfig
    directory: Path
    _metrics: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def summary(self) -> dict:
        return store.read_summary(self.directory) or {}

    @property
    def metrics(self) -> pd.DataFrame:
        if self._metrics is None:
            self._metrics = store.read_metrics(self.directory)
        return self._metrics

    def series(self, metric: str, layer: int = 0) -> pd.Series:
        m = self.metrics
        return m[(m.metric == metric) & (m.layer == layer)].set_index("step")["value"]

    def tagged(self, base: str, layer: int = 0) -> pd.DataFrame:
        """Steps x multiplier (or unit) table of a tagged metric such as grad_diff@<m>."""
        m = self.metrics[self.metrics.layer == layer]
        parts = store.split_metric(m.metric)
        sel = parts.base == base
        tag = parts.multiplier[sel] if parts.multiplier[sel].notna().any() else parts.unit[sel]
        return m[sel].assign(tag=tag.values).pivot_table(index="step", columns="tag", values="value")


class MissingRuns(RuntimeError):
    pass


def load(cfgs: list[DictConfig]) -> list[Run]:
    runs, missing = [], []
    for cfg in cfgs:
        directory = store.find_run(cfg)
        (runs if store.is_finished(directory) else missing).append(Run(cfg, directory))
    if missing:
        names = "\n  ".join(str(r.directory) for r in missing[:10])
        raise MissingRuns(f"{len(missing)} of {len(cfgs)} runs this figure needs are not in the store yet:\n  {names}"
                          f"\nRun them with `make reproduce-<figure> SCALE=... SEEDS=...` (or bnlab-train -m ...).")
    return runs


def select(runs: list[Run], **where) -> list[Run]:
    """Runs whose config matches every dotted key = value (norm='batch' is short for norm.kind...)."""
    def value(run, key):
        if key == "norm":
            return norm_name(run.cfg)
        if key == "lr":
            return run.cfg.optim.lr
        node = run.cfg
        for part in key.split("."):
            node = node[part]
        return node

    def same(a, b):
        return np.isclose(a, b, rtol=1e-9) if isinstance(a, float) else a == b

    return [r for r in runs if all(same(value(r, k), v) for k, v in where.items())]


def norm_name(cfg: DictConfig) -> str:
    """The norm config group a run came from: none, batch, noisy_batch, l1, l2, linf (+noise if added)."""
    if cfg.norm.noise.enabled:
        return "noisy_batch" if cfg.norm.kind == "batch" else f"{cfg.norm.kind}+noise"
    return cfg.norm.kind


def by_model(runs: list[Run], model: str) -> list[Run]:
    return select(runs, **{"model.name": model})


def smoothed(series: pd.Series, steps: int) -> pd.Series:
    """Per-step batch values averaged over a trailing window of 2% of the run (the paper's curves are smoothed
    too): the training accuracy curves."""
    return series.rolling(max(1, steps // 50), min_periods=1).mean()


def final_train_accuracy(run: Run) -> float:
    """Training accuracy at the end: the mean batch accuracy over the last 2% of the steps (nan if diverged)."""
    if run.summary.get("status") != "finished":
        return float("nan")
    return float(smoothed(run.series("accuracy"), run.cfg.train.steps).iloc[-1])


def accuracy_panel(ax, runs: list[Run], norms, split: str = "train", ls: str = "-", label_suffix: str = ""):
    """Training accuracy (smoothed batch accuracy, every step) or test accuracy (evaluation mode, at intervals)."""
    for norm in norms:
        label, color = NORM_STYLE[norm]
        chosen = select(runs, norm=norm)
        if split == "train":
            series = [smoothed(r.series("accuracy"), r.cfg.train.steps) for r in chosen]
        else:
            series = [r.series(f"eval_{split}_accuracy") for r in chosen]
        mean_band(ax, series, label + label_suffix, color, ls=ls)
    ax.set_ylabel(f"{split.capitalize()} accuracy (%)"), steps_axis(ax, runs[0].cfg.train.steps)


def stack(series: list[pd.Series]) -> pd.DataFrame:
    """Seeds side by side on the union of their steps (a diverged seed ends early)."""
    return pd.concat([s.rename(i) for i, s in enumerate(series)], axis=1).sort_index()


def mean_band(ax, series: list[pd.Series], label: str, color: str, log: bool = False, **kw):
    """Mean over seeds as a line, min-max over seeds as a band (geometric mean when log)."""
    table = stack(series)
    if log:
        table = np.log10(table.where(table > 0))
    mid, lo, hi = table.mean(1), table.min(1), table.max(1)
    if log:
        mid, lo, hi = 10 ** mid, 10 ** lo, 10 ** hi
    ax.plot(mid.index, mid.values, color=color, label=label, **kw)
    if table.shape[1] > 1:
        ax.fill_between(mid.index, lo.values, hi.values, color=color, alpha=0.2, linewidth=0)


def range_band(ax, tables: list[pd.DataFrame], label: str, color: str, alpha: float = 0.5):
    """The paper's landscape bands: [min over multipliers, max over multipliers] at each step, as the
    envelope over seeds, so that one seed's spike shows at its full height (an average would hide it)."""
    lo = stack([t.min(1) for t in tables]).min(1)
    hi = stack([t.max(1) for t in tables]).max(1)
    ax.fill_between(lo.index, lo.values, hi.values, color=color, alpha=alpha, label=label, linewidth=0)


def steps_axis(ax, steps: int):
    ax.set_xlabel("Steps")
    ax.set_xlim(0, steps)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5, integer=True))
    if steps >= 2000:  # the paper's "5k, 10k" labels
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v else "0"))


# ----------------------------------------------------------------------------------------- claims


@dataclass
class Claim:
    """One of the paper's claims as we judge it. `quote` and `rule` are fixed in the figure's module, written
    before the runs they judge were seen; `measured` and `holds` come from the runs."""

    claim: str  # what the paper says, one sentence
    quote: str  # the paper's sentence (or the figure) that the claim tests
    rule: str  # how it is judged, with its thresholds
    paper: str  # the paper's value or picture
    measured: str  # what we measured, with numbers
    holds: bool
    values: dict = field(default_factory=dict)  # the numbers behind `measured`, for claims.json


# Training speed is judged early, where the paper's curves separate: accuracy saturates near 100% by the
# end of a paper-scale run, so a final accuracy says little about speed.
EARLY_CHECKPOINTS = (0.05, 0.1, 0.2)  # fractions of the run: steps 750, 1500, 3000 of the paper's 15,000


def accuracy_at(run: Run, fraction: float) -> float:
    """Training accuracy at `fraction` of the run: the mean batch accuracy over the 2% of the steps ending
    there (nan if the run diverged before)."""
    steps = run.cfg.train.steps
    end = int(round(fraction * steps))
    acc = run.series("accuracy")
    window = acc[(acc.index < end) & (acc.index >= end - max(1, steps // 50))]
    return float(window.mean()) if len(window) else float("nan")


def checkpoint_accuracies(runs: list[Run]) -> dict[str, list[float]]:
    """{"5%": [accuracy of each run at 5% of the run], ...} at EARLY_CHECKPOINTS."""
    return {f"{f:.0%}": [accuracy_at(r, f) for r in runs] for f in EARLY_CHECKPOINTS}


def steps_to_reach(run: Run, level: float) -> float:
    """First step at which the smoothed training accuracy reaches `level` (nan if never)."""
    acc = smoothed(run.series("accuracy"), run.cfg.train.steps)
    reached = acc[acc >= level]
    return float(reached.index[0]) if len(reached) else float("nan")


def spread(values) -> str:
    """'mean (min-max over seeds)' in 3 significant digits."""
    v = np.asarray(list(values), dtype=float)
    if len(v) == 1:
        return f"{v[0]:.3g}"
    return f"{np.nanmean(v):.3g} ({np.nanmin(v):.3g}-{np.nanmax(v):.3g})"


def geomean(values) -> float:
    """Geometric mean (of positive values spanning orders of magnitude; an infinite one gives inf)."""
    v = np.asarray(list(values), dtype=float)
    return float(np.exp(np.mean(np.log(np.maximum(v, 1e-300)))))


def write_results(out_dir: Path, figure: str, claims: list[Claim], notes: str, seeds: int, scale: str,
                  datasets: list[str] = ()) -> None:
    """Merge this figure's claims into claims.json and rewrite README.md from it (figures in the paper's
    order)."""
    from experiments import FIGURES

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "claims.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[figure] = {"seeds": seeds, "notes": notes, "datasets": list(datasets), "claims": [asdict(c) for c in claims]}
    order = list(FIGURES)
    data = dict(sorted(data.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
    lines = [f"# bnlab results, scale `{scale}`", "",
             "Written by `make reproduce-<figure>` / `bnlab-figure` from the logged runs; do not edit by hand.", ""]
    for name, entry in data.items():
        used = "; ".join(entry.get("datasets", []))
        lines += [f"## {name}", "", f"![{name}]({name}.png)", "",
                  f"Seeds: {entry['seeds']}.{f' Data: {used}.' if used else ''} {entry['notes']}", ""]
        if entry["claims"]:
            lines += ["| claim | the paper | rule | paper's value | measured | holds |", "|---|---|---|---|---|---|"]
            lines += [f"| {c['claim']} | {c.get('quote', '')} | {c.get('rule', '')} | {c['paper']} | {c['measured']} | "
                      f"{'yes' if c['holds'] else '**no**'} |" for c in entry["claims"]]
            lines.append("")
    (out_dir / "README.md").write_text("\n".join(lines))
