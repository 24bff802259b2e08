"""Figure 3: internal covariate shift (Definition 2.1) with and without BatchNorm. Per model and learning
rate: training accuracy (VGG) or loss (DLN), then the l2-difference (log) and cosine between G and G' for
two layers (VGG #5 and #10, DLN #9 and #17). Claim 4: BN does not reduce ICS; for the DLN the standard
network's cosine stays near 1 while BN's is far lower and its l2-difference higher."""

import matplotlib.pyplot as plt
import numpy as np

from experiments.common import NORM_STYLE, Claim, accuracy_panel, by_model, mean_band, select, spread, steps_axis

LAYERS = {"vgg": (5, 10), "dln": (9, 17)}
NORMS = ("none", "batch")


def draw(runs, path):
    rows = [(model, lr) for model in ("vgg", "dln") for lr in sorted({r.cfg.optim.lr for r in by_model(runs, model)},
                                                                       reverse=True)]
    fig = plt.figure(figsize=(13, 4.2 * len(rows)))
    grid = fig.add_gridspec(2 * len(rows), 3, width_ratios=[1.2, 1, 1], hspace=0.2, wspace=0.25)
    for i, (model, lr) in enumerate(rows):
        chosen_lr = select(by_model(runs, model), lr=lr)
        steps = chosen_lr[0].cfg.train.steps
        ax = fig.add_subplot(grid[2 * i:2 * i + 2, 0])
        if model == "vgg":
            accuracy_panel(ax, chosen_lr, NORMS)
        else:
            for norm in NORMS:
                label, color = NORM_STYLE[norm]
                mean_band(ax, [r.series("loss") for r in select(chosen_lr, norm=norm)], label, color, log=True)
            ax.set_yscale("log"), ax.set_ylabel("Training Loss"), steps_axis(ax, steps)
        ax.set_ylabel(f"{model.upper()}, LR = {lr:g}\n{ax.get_ylabel()}"), ax.legend(fontsize=8)
        for j, layer in enumerate(LAYERS[model]):
            top, bottom = fig.add_subplot(grid[2 * i, 1 + j]), fig.add_subplot(grid[2 * i + 1, 1 + j])
            for norm in NORMS:
                label, color = NORM_STYLE[norm]
                chosen = select(chosen_lr, norm=norm)
                mean_band(top, [r.series("ics_l2", layer) for r in chosen], label, color, log=True)
                mean_band(bottom, [r.series("ics_cos", layer) for r in chosen], label, color)
            top.set_yscale("log"), top.set_xticklabels([]), top.set_xlim(0, steps)
            bottom.axhline(1, color="k", ls="--", lw=1), bottom.set_ylim(-1.05, 1.05), steps_axis(bottom, steps)
            top.set_title(f"{model.upper()} layer #{layer}", fontsize=10)
            if j == 0:
                top.set_ylabel("ℓ2-Difference"), bottom.set_ylabel("Cos Angle")
    fig.suptitle("Internal covariate shift (Definition 2.1)", y=0.995)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def ics_medians(runs, model):
    """Per lr: (cos standard, cos BN, l2 standard, l2 BN), each a list over seeds of the median over probe
    steps and the figure's two layers."""
    out = {}
    for lr in sorted({r.cfg.optim.lr for r in by_model(runs, model)}, reverse=True):
        def med(norm, metric, lr=lr):
            return [float(np.median(np.concatenate([r.series(metric, layer).values for layer in LAYERS[model]])))
                    for r in select(by_model(runs, model), norm=norm, lr=lr)]

        out[lr] = (med("none", "ics_cos"), med("batch", "ics_cos"), med("none", "ics_l2"), med("batch", "ics_l2"))
    return out


def _describe(per_lr):
    return "; ".join(f"lr {lr:g}: cos standard {spread(cs)}, BN {spread(cb)}; l2 standard {spread(ls)}, BN {spread(lb)}"
                     for lr, (cs, cb, ls, lb) in per_lr.items())


def _values(per_lr):
    return {f"lr={lr:g}": {"cos_standard": cs, "cos_bn": cb, "l2_standard": ls, "l2_bn": lb}
            for lr, (cs, cb, ls, lb) in per_lr.items()}


def claims(runs):
    out = []
    if by_model(runs, "dln"):
        per_lr = ics_medians(runs, "dln")
        holds = all(np.mean(cs) > 0.9 and np.mean(cb) < np.mean(cs) - 0.1 and np.mean(lb) > np.mean(ls)
                    for cs, cb, ls, lb in per_lr.values())
        out.append(Claim(
            claim="BN does not reduce ICS: in the DLN the standard network's cos(G, G') stays near 1 while BN's is "
                  "far lower and its l2-difference higher (median over training, layers #9 and #17)",
            paper="Fig 3b: standard cos near 1 at both lrs; BN cos scattered between -1 and 1; "
                  "BN l2 above standard at lr 1e-7",
            measured=_describe(per_lr), holds=bool(holds), values=_values(per_lr)))
    if by_model(runs, "vgg"):
        per_lr = ics_medians(runs, "vgg")
        holds = all(np.mean(cb) <= np.mean(cs) + 0.1 for cs, cb, _, _ in per_lr.values())
        out.append(Claim(
            claim="BN does not reduce ICS in VGG either: BN's cos(G, G') is not clearly higher than standard's "
                  "(by at most 0.1; median over training, layers #5 and #10)",
            paper="Fig 3a: 'models with BatchNorm have similar, or even worse, internal covariate shift'",
            measured=_describe(per_lr), holds=bool(holds), values=_values(per_lr)))
    return out
