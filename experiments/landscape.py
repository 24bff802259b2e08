"""Panels and measurements shared by the loss-landscape figures (10, 11, 13; VGG's 4 and 12 later)."""

import matplotlib.pyplot as plt
import numpy as np

from experiments.common import NORM_STYLE, mean_band, range_band, select, spread, steps_axis

EARLY = 0.2  # "early in training": the first 20% of the steps


def draw_landscape_panels(axes, runs, norms, log_beta=True):
    """(loss landscape band, gradient predictiveness band, effective beta) for each normalization."""
    band, gp, beta = axes
    for norm in norms:
        label, color = NORM_STYLE[norm]
        chosen = select(runs, norm=norm)
        range_band(band, [r.tagged("landscape_loss") for r in chosen], label, color)
        range_band(gp, [r.tagged("grad_diff") for r in chosen], label, color)
        mean_band(beta, [r.series("beta") for r in chosen], label, color, log=log_beta)
    steps = runs[0].cfg.train.steps
    for ax, name in zip(axes, ("Loss Landscape", "Gradient Predictiveness", "β-smoothness"), strict=True):
        ax.set_yscale("log"), ax.set_ylabel(name), steps_axis(ax, steps), ax.legend(fontsize=8)


MEASURES = ("loss_range", "grad_pred", "beta")


def landscape_measures(run, early: bool):
    """Per probe step: loss range max_m - min_m, gradient predictiveness max_m d_m, and beta; summarized
    by the median over steps (typical size) and the maximum over steps (spikes)."""
    loss, diff, beta = run.tagged("landscape_loss"), run.tagged("grad_diff"), run.series("beta")
    per_step = {"loss_range": loss.max(1) - loss.min(1), "grad_pred": diff.max(1), "beta": beta}
    out = {}
    for name, values in per_step.items():
        if early:
            values = values[values.index < EARLY * run.cfg.train.steps]
        out[f"{name}_median"], out[f"{name}_peak"] = float(values.median()), float(values.max())
    return out


def compare(runs, norm, reference="none", early=True):
    """Per seed measures of `norm` and `reference`. The paper's "smaller / less spiky": holds when, for all
    three measures, both the median and the peak over steps (averaged over seeds) are smaller for `norm`."""
    ours = [landscape_measures(r, early) for r in select(runs, norm=norm)]
    theirs = [landscape_measures(r, early) for r in select(runs, norm=reference)]
    keys = [f"{m}_{s}" for m in MEASURES for s in ("median", "peak")]
    smaller = {k: np.mean([m[k] for m in ours]) < np.mean([m[k] for m in theirs]) for k in keys}
    text = "; ".join(f"{k} {spread([m[k] for m in ours])} vs {spread([m[k] for m in theirs])}"
                     f"{'' if smaller[k] else ' (not smaller)'}" for k in keys)
    return all(smaller.values()), text, {"norm": ours, "reference": theirs}


def figure_grid(n, width=5.0, height=3.6):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height))
    return fig, list(np.atleast_1d(axes))
