"""How the figures look: each normalization's label and colour, the style, and the panels and bands
figures share."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import ticker

from experiments.lib.runs import Run, select, smoothed

STYLE = "seaborn-v0_8-darkgrid"  # bnlab-figure draws every figure in it (experiments.cli.draw)
NORM_STYLE = {  # label, colour: the paper's colours where it has them
    "none": ("Standard", "tab:red"),
    "none+noise": ("Standard + noise (no BN)", "tab:gray"),
    "batch": ("Standard + BatchNorm", "tab:blue"),
    "noisy_batch": ('Standard + "Noisy" BatchNorm', "tab:orange"),
    "l1": ("Standard + L1", "tab:green"),
    "l2": ("Standard + L2", "tab:purple"),
    "linf": ("Standard + L∞", "tab:pink"),
}
EVERY_NORM = ("none", "batch", "l1", "l2", "linf")  # the l_p figures' normalizations


def seeds_in(runs: list[Run]) -> int:
    return len({r.cfg.seed for r in runs})


def bands_caption(runs: list[Run], log: bool = False) -> str:
    """What a mean_band figure's lines and shading are, for its caption."""
    n = seeds_in(runs)
    if n == 1:
        return f"One seed (seed {runs[0].cfg.seed})."
    return (f"Lines: the mean over {n} seeds{' (geometric on logarithmic axes)' if log else ''}; shaded: min-max "
            f"over the {n} seeds.")


def caption(fig, text: str) -> None:
    """A line of text under the figure (saved with bbox_inches='tight', it is never cut off)."""
    fig.text(0.5, -0.005, text, ha="center", va="top", fontsize=9, wrap=True)


def accuracy_panel(ax, runs: list[Run], norms, split: str = "train", ls: str = "-", label_suffix: str = "",
                   colors: dict | None = None, styles: dict | None = None):
    """Training accuracy (smoothed batch accuracy, every step) or test accuracy (evaluation mode, at intervals);
    each norm in its NORM_STYLE colour (or `colors[norm]`) and line style `ls` (or `styles[norm]`)."""
    for norm in norms:
        label, color = NORM_STYLE[norm]
        color, style = (colors or {}).get(norm, color), (styles or {}).get(norm, ls)
        chosen = select(runs, norm=norm)
        if split == "train":
            series = [smoothed(r.series("accuracy"), r.cfg.train.steps) for r in chosen]
        else:
            series = [r.series(f"eval_{split}_accuracy") for r in chosen]
        mean_band(ax, series, label + label_suffix, color, ls=style)
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
    ax.xaxis.set_major_locator(ticker.MaxNLocator(5, integer=True))
    if steps >= 2000:  # the paper's "5k, 10k" labels
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v else "0"))


def loss_panel(ax, runs: list[Run], norms=EVERY_NORM):
    """Training loss (log scale), each normalization's mean over seeds with its min-max band; the l_p
    normalizations dashed."""
    for norm in norms:
        label, color = NORM_STYLE[norm]
        style = "--" if norm.startswith("l") else "-"
        mean_band(ax, [r.series("loss") for r in select(runs, norm=norm)], label, color, log=True, ls=style)
    ax.set_yscale("log"), ax.set_ylabel("Training Loss"), steps_axis(ax, runs[0].cfg.train.steps)
