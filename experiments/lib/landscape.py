"""Panels and measurements shared by the loss-landscape figures (10, 11, 13; VGG's 4 and 12 later)."""

import matplotlib.pyplot as plt
import numpy as np

from experiments.lib.claims import (
    FAILS,
    HOLDS,
    TIE,
    Band,
    Claim,
    Quantity,
    all_of,
    by_seed,
    compare,
    judged,
    seeds_of,
    some_and_none_against,
)
from experiments.lib.plotting import NORM_STYLE, bands_caption, caption, mean_band, range_band, seeds_in, steps_axis
from experiments.lib.runs import classifies, select

EARLY = 0.2  # "early in training": the first 20% of the steps


def draw_landscape_panels(axes, runs, norms):
    """(loss landscape band, gradient predictiveness band, effective beta) for each normalization. Axes as the
    paper's: all logarithmic for the DLN (Figs 10, 13); for VGG only the loss band (Figs 4a, 12b), gradient
    predictiveness and beta linear (Figs 4b, 4c, 12c, 12d)."""
    band, gp, beta = axes
    log_all = not classifies(runs[0])
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
NAMES = {"loss_range": "loss range", "grad_pred": "gradient predictiveness", "beta": "effective beta"}
UPPER = 0.9  # the upper quantile over probe steps judged beside the peak
MIN_EARLY_PROBES = 10  # every scale's schedule measures the early window at least this often (tests/test_config.py)
EDGE = 2.0  # beta's plateau, EDGE / lr: the edge of stability (Cohen et al. 2021), where both networks settle
PLATEAU_MARGIN = 1.05  # beta within 5% above EDGE / lr is on the shared plateau
PEAK_BAND = Band(1.1)  # peaks and upper quantiles over steps are extremes: within 10% of each other, a tie

RULE = (f"for each of the loss range (max_m - min_m of loss_m), the gradient predictiveness (max_m d_m) and the "
        f"effective beta over the probe steps of the window (each step weighted by the steps until the next "
        f"measurement, so that dense early probing does not weigh more): the peak (max) and the {UPPER:.0%} "
        "quantile, geometric mean over seeds. A measure is smaller when neither its peak nor its quantile is "
        "clearly above the reference's and at least one is clearly below; the claim holds when every measure is "
        "smaller, fails when any is clearly above. Beta is first raised to its plateau "
        f"{PLATEAU_MARGIN:g} x {EDGE:g}/lr, the edge of stability where both networks settle (the paper's VGG: "
        "about 20 = 2/0.1; its BatchNorm DLN: about 2e6 = 2/1e-6), so that two values on the plateau tie. "
        "Medians are recorded in the values, not judged")
BAND_TEXT = f"two peaks or quantiles tie when {PEAK_BAND.describe()} of each other"


def plateau(run) -> float:
    """Beta's plateau, EDGE / lr: training at step size lr drives the curvature along the gradient to about 2/lr
    (the edge of stability), where the paper's effective beta settles for both networks (Figs 4c, 10c)."""
    return EDGE / run.cfg.optim.lr


def window_statistics(values, end: float) -> dict[str, float]:
    """Median, UPPER quantile and peak of per-step values over the steps before `end`, each measured step
    weighted by the steps until the next one (or `end`): quantiles over time, however densely it was probed."""
    values = values[values.index < end].sort_index()
    if values.empty:
        return {"median": np.nan, "q90": np.nan, "peak": np.nan}
    steps = np.asarray(values.index, dtype=float)
    weights = np.diff(np.append(steps, end))
    order = np.argsort(values.to_numpy(), kind="stable")
    sorted_values, cumulative = values.to_numpy()[order], np.cumsum(weights[order]) / weights.sum()

    def quantile(q):  # the smallest value whose cumulative weight reaches q (the inverted CDF)
        return float(sorted_values[min(np.searchsorted(cumulative, q - 1e-12), len(sorted_values) - 1)])

    return {"median": quantile(0.5), "q90": quantile(UPPER), "peak": float(sorted_values[-1])}


def landscape_measures(run, early: bool) -> dict[str, float]:
    """Per probe step: loss range max_m - min_m, gradient predictiveness max_m d_m, and beta; summarized by
    window_statistics over the whole run or its first EARLY (`early`)."""
    loss, diff, beta = run.tagged("landscape_loss"), run.tagged("grad_diff"), run.series("beta")
    per_step = {"loss_range": loss.max(1) - loss.min(1), "grad_pred": diff.max(1), "beta": beta}
    end = (EARLY if early else 1.0) * run.cfg.train.steps
    return {f"{name}_{stat}": value for name, values in per_step.items()
            for stat, value in window_statistics(values, end).items()}


def measure_quantities(runs, norm: str, early: bool, measures=MEASURES) -> dict[str, Quantity]:
    """{"<norm>:<measure>_<stat>": Quantity over seeds} of `norm`'s runs."""
    stats = [landscape_measures(r, early) for r in by_seed(select(runs, norm=norm))]
    return {f"{norm}:{m}_{stat}": Quantity([s[f"{m}_{stat}"] for s in stats], geometric=True)
            for m in measures for stat in ("peak", "q90", "median")}


def smaller(v: dict, norm: str, reference: str, measure: str, floor: float = 0.0) -> tuple[str, dict]:
    """Whether `norm`'s `measure` is smaller than `reference`'s (RULE): its outcome and that of the peak and the
    quantile."""
    parts = {}
    for stat in ("peak", "q90"):
        a, b = v[f"{norm}:{measure}_{stat}"], v[f"{reference}:{measure}_{stat}"]
        parts[stat] = compare(max(a, floor), "<", max(b, floor), PEAK_BAND)
    return some_and_none_against(*parts.values()), parts


def compare_landscape(runs, norm, reference="none", early=True, measures=MEASURES) -> tuple:
    """RULE for `norm` against `reference`: (measured text, quantities, decide)."""
    q = {**measure_quantities(runs, norm, early, measures), **measure_quantities(runs, reference, early, measures)}
    floor = PLATEAU_MARGIN * plateau(select(runs, norm=reference)[0])

    def decide(v):
        return all_of(*(smaller(v, norm, reference, m, floor if m == "beta" else 0.0)[0] for m in measures))

    means = {k: x.mean for k, x in q.items()}
    parts = []
    for m in measures:
        _, outcome = smaller(means, norm, reference, m, floor if m == "beta" else 0.0)
        mark = {HOLDS: "", TIE: " (a tie)", FAILS: " (above)"}
        parts.append(f"{NAMES[m]}: peak {q[f'{norm}:{m}_peak'].text()} vs {q[f'{reference}:{m}_peak'].text()}"
                     f"{mark[outcome['peak']]}, q90 {q[f'{norm}:{m}_q90'].text()} vs "
                     f"{q[f'{reference}:{m}_q90'].text()}{mark[outcome['q90']]}")  # medians: in the values
    return "; ".join(parts), q, decide


def landscape_caption(runs, mean_panels: str = "β-smoothness") -> str:
    n = seeds_in(runs)
    over = f"the envelope over {n} seeds" if n > 1 else f"seed {runs[0].cfg.seed}"
    return (f"Loss landscape, gradient predictiveness: shaded from the smallest to the largest value over the step "
            f"multipliers at each measured step, {over}. {mean_panels}: {_lower(bands_caption(runs, log=True))}")


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]


def figure_grid(n, width=5.0, height=3.6):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height))
    return fig, list(np.atleast_1d(axes))


def standard_vs_bn_claims(runs, model: str, quote: str, paper_early: str, paper_all: str) -> list[Claim]:
    """Claim 5 for one model (figures 4 and 10): early in training, and over the whole run."""
    out = []
    for early, window, claim, paper in ((True, f"the first {EARLY:.0%} of the run", "early in training", paper_early),
                                        (False, "the whole run", "over the whole run", paper_all)):
        text, q, decide = compare_landscape(runs, "batch", early=early)
        out.append(judged(f"{model}: BN's landscape is smoother than standard's {claim}", quote,
                          f"window: {window} (BN vs standard); {RULE}", BAND_TEXT, paper, text, q, decide,
                          seeds_of(runs)))
    return out


def every_norm_claims(runs, norms, model: str, quote: str, paper: str) -> list[Claim]:
    """Claim 6, landscape part (figures 12 and 13): each normalization against standard."""
    out = []
    for norm in norms:
        text, q, decide = compare_landscape(runs, norm, early=False)
        out.append(judged(f"{model}: {norm} smooths the landscape like BN (below standard)", quote,
                          f"window: the whole run ({norm} vs standard); {RULE}", BAND_TEXT, paper, text, q, decide,
                          seeds_of(runs)))
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
    caption(fig, landscape_caption(runs, "(a) and β-smoothness"))
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
    caption(fig, landscape_caption(runs))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
