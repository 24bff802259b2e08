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


def landscape_measures(run, early: bool):
    """Medians over probe steps of: loss range max_m - min_m, max_m d_m, and beta."""
    loss, diff, beta = run.tagged("landscape_loss"), run.tagged("grad_diff"), run.series("beta")
    if early:
        cut = EARLY * run.cfg.train.steps
        loss, diff, beta = loss[loss.index < cut], diff[diff.index < cut], beta[beta.index < cut]
    return {"loss_range": float(np.median(loss.max(1) - loss.min(1))),
            "grad_pred": float(np.median(diff.max(1))),
            "beta": float(np.median(beta))}


def compare(runs, norm, reference="none", early=True):
    """Per seed measures of `norm` and of `reference`; holds when all three are smaller for `norm`."""
    ours = [landscape_measures(r, early) for r in select(runs, norm=norm)]
    theirs = [landscape_measures(r, early) for r in select(runs, norm=reference)]
    keys = ("loss_range", "grad_pred", "beta")
    smaller = all(np.mean([m[k] for m in ours]) < np.mean([m[k] for m in theirs]) for k in keys)
    text = "; ".join(f"{k} {spread([m[k] for m in ours])} vs {spread([m[k] for m in theirs])}" for k in keys)
    return smaller, text, {"norm": ours, "reference": theirs}


def figure_grid(n, width=5.0, height=3.6):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height))
    return fig, list(np.atleast_1d(axes))
