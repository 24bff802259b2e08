"""Panels and measurements shared by the loss-landscape figures (10, 11, 13; VGG's 4 and 12 later)."""

import matplotlib.pyplot as plt
import numpy as np

from experiments.common import NORM_STYLE, Claim, mean_band, range_band, select, spread, steps_axis

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


def standard_vs_bn_claims(runs, model: str, paper_early: str, paper_all: str) -> list[Claim]:
    """Claim 5 for one model (figures 4 and 10): early in training, and over the whole run."""
    early_ok, early_text, early_values = compare(runs, "batch", early=True)
    all_ok, all_text, all_values = compare(runs, "batch", early=False)
    return [
        Claim(claim=f"{model}: BN's loss range, gradient predictiveness and effective beta are smaller and less "
                    f"spiky than standard's early in training (first {EARLY:.0%} of steps; median and peak over "
                    "steps, BN vs standard)",
              paper=paper_early, measured=early_text, holds=early_ok, values=early_values),
        Claim(claim=f"{model}: the same over the whole run", paper=paper_all, measured=all_text, holds=all_ok,
              values=all_values),
    ]


def every_norm_claims(runs, norms, model: str, paper: str) -> list[Claim]:
    """Claim 6, landscape part (figures 12 and 13): each normalization against standard."""
    out = []
    for norm in norms:
        ok, text, values = compare(runs, norm, early=False)
        out.append(Claim(claim=f"{model}: {norm} has smaller loss range, gradient predictiveness and beta than "
                               "standard (median and peak over training, norm vs standard)",
                         paper=paper, measured=text, holds=ok, values=values))
    return out


def every_norm_figure(runs, norms, first_panel, title: str, path) -> None:
    """Figures 12 and 13: a training panel, then the three landscape panels, for every normalization."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    first_panel(axes[0, 0], runs)
    axes[0, 0].legend(fontsize=8)
    draw_landscape_panels([axes[1, 0], axes[0, 1], axes[1, 1]], runs, norms)
    for ax, letter in zip([axes[0, 0], axes[1, 0], axes[0, 1], axes[1, 1]], "abcd", strict=True):
        ax.set_title(f"({letter})")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def standard_vs_bn_figure(runs, title: str, path) -> None:
    """Figures 4 and 10: the three landscape panels, standard vs BatchNorm."""
    fig, axes = figure_grid(3)
    draw_landscape_panels(axes, runs, ("none", "batch"))
    for ax, letter in zip(axes, "abc", strict=True):
        ax.set_title(f"({letter})")
    m = runs[0].cfg.probes.landscape.multipliers
    fig.suptitle(f"{title}: landscape along the gradient (multipliers {m.start:g}-{m.stop:g} x lr "
                 f"{runs[0].cfg.optim.lr:g})")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
