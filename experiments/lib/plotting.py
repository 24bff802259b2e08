"""How the figures look: each normalization's label and colour, the style, and the panels and bands
figures share."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib import ticker

from bnlab.norms import NORMALIZATIONS, normalization
from experiments.lib.runs import Run, select, smoothed

STYLE = "seaborn-v0_8-darkgrid"  # bnlab-figure draws every figure in it (experiments.cli.draw)


class _NormStyles(Mapping):
    """(label, colour) of a run's norm name (experiments.lib.runs.norm_name), from its registry entry
    (bnlab.norms.register_norm): "batch", "noisy_batch" (BatchNorm with its noise), "l1+noise", ..."""

    def __getitem__(self, name: str) -> tuple[str, str]:
        kind, noisy = _kind(name)
        if kind not in NORMALIZATIONS:
            raise KeyError(name)
        norm = NORMALIZATIONS[kind]
        if noisy:
            return norm.noisy_label or f"{norm.label} + noise", norm.noisy_color
        return norm.label, norm.color

    def __iter__(self):
        return iter(NORMALIZATIONS)

    def __len__(self):
        return len(NORMALIZATIONS)


def _kind(name: str) -> tuple[str, bool]:
    if name == "noisy_batch":
        return "batch", True
    return name.removesuffix("+noise"), name.endswith("+noise")


def norm_linestyle(name: str) -> str:
    return normalization(_kind(name)[0]).linestyle


NORM_STYLE = _NormStyles()
# The normalizations of the paper's l_p figures (11-13) and of their claims: the paper's set, fixed, so that a
# normalization registered later changes no paper verdict.
LP_FIGURE_NORMS = ("none", "batch", "l1", "l2", "linf")


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


def loss_panel(ax, runs: list[Run], norms):
    """Training loss (log scale), each normalization's mean over seeds with its min-max band, in its
    registered line style (the l_p normalizations dashed)."""
    for norm in norms:
        label, color = NORM_STYLE[norm]
        style = norm_linestyle(norm)
        mean_band(ax, [r.series("loss") for r in select(runs, norm=norm)], label, color, log=True, ls=style)
    ax.set_yscale("log"), ax.set_ylabel("Training Loss"), steps_axis(ax, runs[0].cfg.train.steps)
