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

from experiments.lib.claims import Claim, geomean, spread
from experiments.lib.plotting import NORM_STYLE, mean_band, steps_axis
from experiments.lib.runs import each_model, select

ORDER = 20  # beyond the paper: after its figures

NORMS = ("none", "batch")
SHORT = {"none": "Standard", "batch": "BatchNorm"}  # legend labels: six entries share one panel
LATE = 0.2  # "during training", for the 2/lr claim: after the first 20% of the run (Cohen et al.'s sharpening)


def _eig(run, mode: str, rank: int = 1):
    return run.series(f"hessian_eig{rank}_{mode}")


def _room_for_legend(ax):
    """The legend above the curves: the log axis raised by a factor of 30 leaves it a band of its own."""
    bottom, top = ax.get_ylim()
    if ax.get_yscale() == "log":
        ax.set_ylim(bottom, top * 30)
    ax.legend(fontsize=7, loc="upper right", ncol=2)


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
    ax.axhline(2 / lr, color="black", lw=1, label="2 / lr")
    ax.set_yscale("log"), ax.set_ylabel("Top eigenvalue / β")
    _room_for_legend(ax)


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
    _room_for_legend(ax)


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
    _room_for_legend(ax)


def draw(runs, path):
    models = each_model(runs)
    fig, axes = plt.subplots(len(models), 3, figsize=(16, 4.2 * len(models)), squeeze=False)
    for row, (name, chosen) in zip(axes, models, strict=True):
        _top_panel(row[0], chosen), _topk_panel(row[1], chosen), _trace_panel(row[2], chosen)
        for ax, letter in zip(row, "abc", strict=True):
            ax.set_title(f"{name} ({letter})")
            steps_axis(ax, chosen[0].cfg.train.steps)
    fig.suptitle("The Hessian of the loss over training: batch statistics (what SGD optimizes) and running "
                 "statistics (what PyHessian measures)")
    fig.tight_layout()
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
COHEN = ("Cohen et al. 2021: gradient descent at step size lr drives the top eigenvalue up to about 2/lr, where "
         "it hovers (the edge of stability); below it with small-batch SGD")
EFFECTIVE = ("Section 3.2: 'the loss exhibits a significantly better \"effective\" β-smoothness' (the change of "
             "the gradient along the gradient, a one-direction proxy for the top eigenvalue)")


def claims(runs):
    return [claim for name, chosen in each_model(runs) for claim in _model_claims(chosen, name)]


def _model_claims(runs, name: str) -> list[Claim]:
    steps, lr = runs[0].cfg.train.steps, runs[0].cfg.optim.lr
    standard, bn = select(runs, norm="none"), select(runs, norm="batch")
    top = {n: [_median(_eig(r, "train")) for r in rs] for n, rs in (("none", standard), ("batch", bn))}
    beta = {n: [_median(r.series("beta")) for r in rs] for n, rs in (("none", standard), ("batch", bn))}
    # Running statistics start at 0 and 1, which estimate nothing: step 0 is left out of the live/frozen ratio
    frozen = [_median((_eig(r, "eval") / _eig(r, "train"))[lambda s: s.index > 0]) for r in bn]
    edge = {n: [_median(_eig(r, "train"), LATE, steps) * lr / 2 for r in rs] for n, rs in (("none", standard),
                                                                                              ("batch", bn))}
    top_ratio = geomean(top["none"]) / geomean(top["batch"])
    beta_ratio = geomean(beta["none"]) / geomean(beta["batch"])
    return [
        Claim(claim=f"{name}: the standard network's top Hessian eigenvalue exceeds BatchNorm's", quote=SMOOTHER,
              rule="median over measured steps of the top eigenvalue with batch statistics, geometric mean over "
                   "seeds: standard's > BatchNorm's",
              paper="not measured in the paper; Ghorbani et al.: BatchNorm's top eigenvalues far smaller",
              measured=f"median λ₁ standard {spread(top['none'])}, BatchNorm {spread(top['batch'])} "
                       f"(ratio {top_ratio:.3g})",
              holds=bool(top_ratio > 1), values={"top_median": top, "ratio": top_ratio}),
        Claim(claim=f"{name}: BatchNorm's top eigenvalue is lower with batch (live) statistics than with running "
                    "(frozen) ones", quote=GHORBANI,
              rule="median over the measured steps after step 0 of λ₁(running statistics) / λ₁(batch statistics), "
                   "geometric mean over seeds: > 1",
              paper="not measured in the paper; Ghorbani et al.: outliers return with population statistics",
              measured=f"median ratio running / batch {spread(frozen)}",
              holds=bool(geomean(frozen) > 1), values={"frozen_over_live": frozen}),
        Claim(claim=f"{name}: training keeps the top eigenvalue at or below 2/lr (edge of stability)", quote=COHEN,
              rule=f"for standard and BatchNorm: median over the measured steps after the first {LATE:.0%} of "
                   "the run of λ₁(batch statistics) x lr / 2, geometric mean over seeds: <= 1 for both",
              paper=f"not measured in the paper; 2/lr = {2 / lr:g}",
              measured=f"λ₁ x lr / 2: standard {spread(edge['none'])}, BatchNorm {spread(edge['batch'])}",
              holds=bool(geomean(edge["none"]) <= 1 and geomean(edge["batch"]) <= 1), values={"edge": edge}),
        Claim(claim=f"{name}: the effective β and the top eigenvalue rank standard and BatchNorm the same way",
              quote=EFFECTIVE,
              rule="median over measured steps, geometric mean over seeds: standard / BatchNorm is above 1 for both "
                   "the effective β and λ₁ (batch statistics), or below 1 for both",
              paper="Fig 4c, 10c: effective β of standard above BatchNorm's",
              measured=f"standard / BatchNorm: effective β {beta_ratio:.3g} (medians {spread(beta['none'])} vs "
                       f"{spread(beta['batch'])}), λ₁ {top_ratio:.3g}",
              holds=bool((beta_ratio > 1) == (top_ratio > 1)), values={"beta_median": beta, "beta_ratio": beta_ratio}),
    ]
