"""Panels and measurements shared by the loss-landscape figures (10, 11, 13; VGG's 4 and 12 later)."""

import matplotlib.pyplot as plt
import numpy as np

from experiments.lib.claims import Claim, geomean, spread
from experiments.lib.plotting import NORM_STYLE, mean_band, range_band, steps_axis
from experiments.lib.runs import select

EARLY = 0.2  # "early in training": the first 20% of the steps


def draw_landscape_panels(axes, runs, norms):
    """(loss landscape band, gradient predictiveness band, effective beta) for each normalization. Axes as the
    paper's: all logarithmic for the DLN (Figs 10, 13); for VGG only the loss band (Figs 4a, 12b), gradient
    predictiveness and beta linear (Figs 4b, 4c, 12c, 12d)."""
    band, gp, beta = axes
    log_all = runs[0].cfg.model.name != "vgg"
    for norm in norms:
        label, color = NORM_STYLE[norm]
        chosen = select(runs, norm=norm)
        range_band(band, [r.tagged("landscape_loss") for r in chosen], label, color)
        range_band(gp, [r.tagged("grad_diff") for r in chosen], label, color)
        mean_band(beta, [r.series("beta") for r in chosen], label, color, log=log_all)
    steps = runs[0].cfg.train.steps
    for ax, name in zip(axes, ("Loss Landscape", "Gradient Predictiveness", "β-smoothness"), strict=True):
        if ax is band or log_all:
            ax.set_yscale("log")
        ax.set_ylabel(name), steps_axis(ax, steps), ax.legend(fontsize=8)


MEASURES = ("loss_range", "grad_pred", "beta")
UPPER = 0.9  # the upper quantile over probe steps judged beside the peak
PLATEAU_MARGIN = 1.05  # beta within 5% of 1 / (smallest multiplier x lr) is on the shared plateau

RULE = (f"for each of the loss range (max_m - min_m of loss_m), the gradient predictiveness (max_m d_m) and the "
        f"effective beta, over the probe steps of the window: BN's peak (max) and {UPPER:.0%} quantile, geometric "
        "mean over seeds, are both below standard's. Beta is first raised to its late plateau 1 / (smallest "
        f"multiplier x lr) x {PLATEAU_MARGIN:g}, which both networks share in the paper, so that two values on the "
        "plateau tie and count neither for nor against. Medians over steps are reported, not judged")


def plateau(run) -> float:
    """Beta's value when the gradient at every probed point has changed by its whole norm (it vanishes or
    turns around): d_m = ||g|| gives beta = 1 / (m lr), largest at the smallest multiplier."""
    return 1.0 / (run.cfg.probes.landscape.multipliers.start * run.cfg.optim.lr)


def landscape_measures(run, early: bool):
    """Per probe step: loss range max_m - min_m, gradient predictiveness max_m d_m, and beta; summarized by
    the median, the UPPER quantile and the maximum over steps (the first EARLY of the run when `early`)."""
    loss, diff, beta = run.tagged("landscape_loss"), run.tagged("grad_diff"), run.series("beta")
    per_step = {"loss_range": loss.max(1) - loss.min(1), "grad_pred": diff.max(1), "beta": beta}
    out = {}
    for name, values in per_step.items():
        if early:
            values = values[values.index < EARLY * run.cfg.train.steps]
        out[f"{name}_median"], out[f"{name}_q90"] = float(values.median()), float(values.quantile(UPPER))
        out[f"{name}_peak"] = float(values.max())
    return out


def compare(runs, norm, reference="none", early=True):
    """RULE for `norm` against `reference`: (holds, text, per-seed values)."""
    ours = [landscape_measures(r, early) for r in select(runs, norm=norm)]
    theirs = [landscape_measures(r, early) for r in select(runs, norm=reference)]
    floor = PLATEAU_MARGIN * plateau(select(runs, norm=reference)[0])
    verdicts, parts = {}, []
    for m in MEASURES:
        for stat in ("peak", "q90"):
            key = f"{m}_{stat}"
            a, b = geomean([v[key] for v in ours]), geomean([v[key] for v in theirs])
            if m == "beta":
                a, b = max(a, floor), max(b, floor)
                verdicts[key] = a < b or a == b == floor
            else:
                verdicts[key] = a < b
        parts.append(f"{m}: peak {spread([v[f'{m}_peak'] for v in ours])} vs {spread([v[f'{m}_peak'] for v in theirs])}"
                     f"{'' if verdicts[f'{m}_peak'] else ' (not below)'}, q90 {spread([v[f'{m}_q90'] for v in ours])} "
                     f"vs {spread([v[f'{m}_q90'] for v in theirs])}{'' if verdicts[f'{m}_q90'] else ' (not below)'}, "
                     f"median {spread([v[f'{m}_median'] for v in ours])} vs "
                     f"{spread([v[f'{m}_median'] for v in theirs])}")
    return all(verdicts.values()), "; ".join(parts), {"norm": ours, "reference": theirs, "verdicts": verdicts}


def figure_grid(n, width=5.0, height=3.6):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height))
    return fig, list(np.atleast_1d(axes))


def standard_vs_bn_claims(runs, model: str, quote: str, paper_early: str, paper_all: str) -> list[Claim]:
    """Claim 5 for one model (figures 4 and 10): early in training, and over the whole run."""
    early_ok, early_text, early_values = compare(runs, "batch", early=True)
    all_ok, all_text, all_values = compare(runs, "batch", early=False)
    return [
        Claim(claim=f"{model}: BN's landscape is smoother than standard's early in training",
              quote=quote, rule=f"window: the first {EARLY:.0%} of the run (BN vs standard); {RULE}",
              paper=paper_early, measured=early_text, holds=early_ok, values=early_values),
        Claim(claim=f"{model}: the same over the whole run", quote=quote, rule=f"window: the whole run; {RULE}",
              paper=paper_all, measured=all_text, holds=all_ok, values=all_values),
    ]


def every_norm_claims(runs, norms, model: str, quote: str, paper: str) -> list[Claim]:
    """Claim 6, landscape part (figures 12 and 13): each normalization against standard."""
    out = []
    for norm in norms:
        ok, text, values = compare(runs, norm, early=False)
        out.append(Claim(claim=f"{model}: {norm} smooths the landscape like BN (below standard)", quote=quote,
                         rule=f"window: the whole run ({norm} vs standard); {RULE}",
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
