"""Beyond the paper: the Hessian of the loss over training (bnlab.probes.curvature), standard vs BatchNorm.

Row per model (VGG, DLN): (a) the top eigenvalue with batch statistics (the loss SGD optimizes; solid) and,
for BatchNorm, with running statistics (what PyHessian measures; dashed), beside the paper's effective
beta (dotted) and 2/lr (black); (b) the top 3 eigenvalues with batch statistics; (c) the trace
(Hutchinson; an estimate that comes out negative is not drawn), both modes. A network without BatchNorm
computes the same function in both modes, so its eval-mode curves are not drawn.

The claims were written before the runs they judge were drawn; each cites what predicts it: the paper's
smoothness claim, Ghorbani et al. 2019 (outlier eigenvalues vanish with BatchNorm and return with
population statistics) and Cohen et al. 2021 (training at step size lr drives the top eigenvalue up to
about 2/lr, the edge of stability).
"""

import matplotlib.pyplot as plt
import numpy as np

from experiments.lib.claims import (
    FAILS,
    HOLDS,
    TIE,
    Band,
    Claim,
    Quantity,
    Report,
    all_of,
    compare,
    judged,
    per_seed,
    seeds_of,
)
from experiments.lib.plotting import NORM_STYLE, bands_caption, caption, mean_band, steps_axis
from experiments.lib.runs import each_model, select

ORDER = 20  # beyond the paper: after its figures

NORMS = ("none", "batch")
SHORT = {"none": "Standard", "batch": "BatchNorm"}  # legend labels: six entries share one panel
LATE = 0.2  # "during training", for the 2/lr claim: after the first 20% of the run (Cohen et al.'s sharpening)


def _eig(run, mode: str, rank: int = 1):
    return run.series(f"hessian_eig{rank}_{mode}")


def _legend_below(ax):
    """The legend under the panel, where it hides no curve and the axis spans the data alone (constrained layout
    makes room for it)."""
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)


def _positive_log(ax, values):
    ax.set_yscale("log" if np.nanmin(values) > 0 else "symlog")


def _top_panel(ax, runs):
    for norm in NORMS:
        color, label = NORM_STYLE[norm][1], SHORT[norm]
        chosen = select(runs, norm=norm)
        mean_band(ax, [_eig(r, "train") for r in chosen], f"{label}: λ₁ batch stats", color, log=True)
        if norm == "batch":
            mean_band(ax, [_eig(r, "eval") for r in chosen], f"{label}: λ₁ running stats", color, log=True, ls="--")
        mean_band(ax, [r.series("beta") for r in chosen], f"{label}: effective β", color, log=True, ls=":")
    lr = runs[0].cfg.optim.lr
    # wide, pale and underneath: a top eigenvalue that sits on 2/lr (the DLN's) stays visible on top of it
    ax.axhline(2 / lr, color="0.55", lw=6, alpha=0.45, zorder=1, label="2 / lr")
    ax.set_yscale("log"), ax.set_ylabel("Top eigenvalue / β")
    _legend_below(ax)


def _topk_panel(ax, runs):
    k = runs[0].cfg.probes.hessian.k
    values = []
    for norm in NORMS:
        color, label = NORM_STYLE[norm][1], SHORT[norm]
        chosen = select(runs, norm=norm)
        for rank in range(1, k + 1):
            series = [_eig(r, "train", rank) for r in chosen]
            values += [v for s in series for v in s.tolist()]
            mean_band(ax, series, f"{label}: λ{rank}" if rank in (1, k) else None, color, log=True,
                      alpha=1.0 - 0.3 * (rank - 1), lw=1.5 - 0.4 * (rank - 1))
    _positive_log(ax, values)
    ax.set_ylabel(f"Top {k} eigenvalues (batch stats)")
    _legend_below(ax)


def _trace_panel(ax, runs):
    """Log axis: a Hutchinson estimate of a trace near 0 can come out negative (few samples); such points are
    left out (mean_band's log mode)."""
    for norm in NORMS:
        color, label = NORM_STYLE[norm][1], SHORT[norm]
        chosen = select(runs, norm=norm)
        for mode, style in (("train", "-"), ("eval", "--")) if norm == "batch" else (("train", "-"),):
            series = [r.series(f"hessian_trace_{mode}") for r in chosen]
            stats = "batch stats" if mode == "train" else "running stats"
            mean_band(ax, series, f"{label}: {stats}", color, log=True, ls=style)
    ax.set_yscale("log"), ax.set_ylabel("Hessian trace (Hutchinson)")
    _legend_below(ax)


def draw(runs, path):
    models = each_model(runs)
    fig, axes = plt.subplots(len(models), 3, figsize=(16, 5.2 * len(models)), squeeze=False, layout="constrained")
    for row, (name, chosen) in zip(axes, models, strict=True):
        _top_panel(row[0], chosen), _topk_panel(row[1], chosen), _trace_panel(row[2], chosen)
        for ax, letter in zip(row, "abc", strict=True):
            ax.set_title(f"{name} ({letter})")
            steps_axis(ax, chosen[0].cfg.train.steps)
    fig.suptitle("The Hessian of the loss over training: batch statistics (what SGD optimizes) and running "
                 "statistics (what PyHessian measures)")
    caption(fig, bands_caption(runs, log=True))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _median(series, after: float = 0.0, steps: int | None = None) -> float:
    """The median over measured steps (those at or after `after` x steps when given)."""
    if steps is not None:
        series = series[series.index >= after * steps]
    return float(series.median())


SMOOTHER = ("Abstract: BatchNorm 'makes the optimization landscape significantly smoother'; Ghorbani et al. "
            "2019: the Hessian's outlier eigenvalues vanish with BatchNorm")
GHORBANI = ("Ghorbani et al. 2019: with BatchNorm the outliers of the Hessian's spectrum disappear, and they come "
            "back when the network is evaluated with population (running) statistics")
COHEN = ("Cohen et al. 2021: with full-batch gradient descent 'the maximum eigenvalue of the training loss Hessian "
         "hovers just above the numerical value 2/(step size)' (the edge of stability)")
EFFECTIVE = ("Section 3.2: 'the loss exhibits a significantly better \"effective\" β-smoothness' (the change of "
             "the gradient along the gradient, a one-direction proxy for the top eigenvalue)")
RATIO_BAND = Band(1.05)  # medians of eigenvalues (or their ratios) within 5% of each other: a tie
JUST_ABOVE = 1.1  # "hovers just above 2/lr": lambda_1 x lr / 2 below this is at the edge or below it


def claims(runs):
    return [claim for name, chosen in each_model(runs) for claim in _model_claims(chosen, name)]


def reports(runs):
    """The edge-of-stability ratio of minibatch VGG: measured on each step's minibatch, where Cohen et al.'s
    full-batch statement does not apply (a minibatch Hessian's top eigenvalue is not the full loss's)."""
    out = []
    for name, chosen in each_model(runs):
        if chosen[0].cfg.model.name == "vgg":
            edge = _edge(chosen)
            out.append(Report(f"{name}: λ₁ (batch statistics, the step's minibatch) x lr / 2 after the first "
                              f"{LATE:.0%} of the run",
                              "Cohen et al.'s 2/lr is a statement about full-batch gradient descent; VGG trains on "
                              "minibatches of 128 and its Hessian is measured on the step's minibatch",
                              f"standard {edge['none'].text()}, BatchNorm {edge['batch'].text()}",
                              {k: q.as_json() for k, q in edge.items()}))
    return out


def _ratio(a: Quantity, b: Quantity) -> Quantity:
    """a / b in each seed (their geometric mean is the ratio of the geometric means)."""
    return Quantity([x / y for x, y in zip(a.per_seed, b.per_seed, strict=True)], geometric=True)


def _edge(runs) -> dict[str, Quantity]:
    steps, lr = runs[0].cfg.train.steps, runs[0].cfg.optim.lr
    return {n: per_seed(select(runs, norm=n), lambda r: _median(_eig(r, "train"), LATE, steps) * lr / 2,
                        geometric=True) for n in NORMS}


def _model_claims(runs, name: str) -> list[Claim]:
    lr, seeds = runs[0].cfg.optim.lr, seeds_of(runs)
    top = {n: per_seed(select(runs, norm=n), lambda r: _median(_eig(r, "train")), geometric=True) for n in NORMS}
    beta = {n: per_seed(select(runs, norm=n), lambda r: _median(r.series("beta")), geometric=True) for n in NORMS}
    # Running statistics start at 0 and 1, which estimate nothing: step 0 is left out of the live/frozen ratio
    frozen = per_seed(select(runs, norm="batch"),
                      lambda r: _median((_eig(r, "eval") / _eig(r, "train"))[lambda s: s.index > 0]), geometric=True)
    band = f"two medians (or a ratio and its threshold) tie {RATIO_BAND.describe()}"
    top_ratio, beta_ratio = _ratio(top["none"], top["batch"]), _ratio(beta["none"], beta["batch"])
    out = [
        judged(f"{name}: the standard network's top Hessian eigenvalue exceeds BatchNorm's", SMOOTHER,
               "median over measured steps of the top eigenvalue with batch statistics, geometric mean over seeds: "
               "standard's above BatchNorm's", band,
               "not measured in the paper; Ghorbani et al.: BatchNorm's top eigenvalues far smaller",
               f"median λ₁ standard {top['none'].text()}, BatchNorm {top['batch'].text()} (ratio {top_ratio.text()})",
               {"none": top["none"], "batch": top["batch"]}, lambda v: compare(v["none"], ">", v["batch"], RATIO_BAND),
               seeds),
        judged(f"{name}: BatchNorm's top eigenvalue is lower with batch (live) statistics than with running (frozen) "
               "ones", GHORBANI,
               "median over the measured steps after step 0 of λ₁(running statistics) / λ₁(batch statistics), "
               "geometric mean over seeds: above 1", band,
               "not measured in the paper; Ghorbani et al.: outliers return with population statistics",
               f"median ratio running / batch {frozen.text()}", {"frozen_over_live": frozen},
               lambda v: compare(v["frozen_over_live"], ">", 1.0, RATIO_BAND), seeds),
    ]
    if runs[0].cfg.model.name != "vgg":  # full-batch gradient descent: where Cohen et al.'s statement applies
        edge = _edge(runs)
        out.append(judged(
            f"{name}: full-batch training keeps the top eigenvalue at 2/lr or just above it (edge of stability)",
            COHEN,
            f"for standard and BatchNorm: median over the measured steps after the first {LATE:.0%} of the run of "
            f"λ₁(batch statistics) x lr / 2, geometric mean over seeds, below {JUST_ABOVE:g} ('just above' 1)",
            f"a ratio ties with {JUST_ABOVE:g} {RATIO_BAND.describe()}",
            f"not measured in the paper; 2/lr = {2 / lr:g}",
            f"λ₁ x lr / 2: standard {edge['none'].text()}, BatchNorm {edge['batch'].text()}", edge,
            lambda v: all_of(*(compare(v[n], "<", JUST_ABOVE, RATIO_BAND) for n in NORMS)), seeds))

    def alike(v):
        by_beta = compare(v["beta_none"], ">", v["beta_batch"], RATIO_BAND)
        by_top = compare(v["top_none"], ">", v["top_batch"], RATIO_BAND)
        if TIE in (by_beta, by_top):
            return TIE
        return HOLDS if by_beta == by_top else FAILS

    out.append(judged(
        f"{name}: the effective β and the top eigenvalue rank standard and BatchNorm the same way", EFFECTIVE,
        "median over measured steps, geometric mean over seeds: standard's above BatchNorm's for both the effective β "
        "and λ₁ (batch statistics), or below for both; a tie in either leaves it undecided", band,
        "Fig 4c, 10c: effective β of standard above BatchNorm's",
        f"standard / BatchNorm: effective β {beta_ratio.text()} (medians {beta['none'].text()} vs "
        f"{beta['batch'].text()}), λ₁ {top_ratio.text()}",
        {"beta_none": beta["none"], "beta_batch": beta["batch"], "top_none": top["none"], "top_batch": top["batch"]},
        alike, seeds))
    return out
