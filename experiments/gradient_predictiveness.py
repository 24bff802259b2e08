"""Figure 11: gradient change d_m against the step size m * lr, one line per probe step, coloured from
early (blue) to late (red), standard vs BatchNorm, VGG and DLN. Claim 5 (gradient part): gradients of
the BN network are more predictive (smaller d_m) than the standard network's."""

import matplotlib.pyplot as plt
import numpy as np

from experiments.common import NORM_STYLE, Claim, by_model, select, spread

NORMS = ("none", "batch")
PAPER = {"vgg": "Fig 11a: standard up to about 250, BN mostly below about 40",
         "dln": "Fig 11b: standard up to about 1e13, BN about 1e5"}


def draw(runs, path):
    models = [m for m in ("vgg", "dln") if by_model(runs, m)]
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 4 * len(models)), squeeze=False)
    cmap = plt.get_cmap("coolwarm")
    for row, model in zip(axes, models, strict=True):
        for ax, norm in zip(row, NORMS, strict=True):
            run = select(by_model(runs, model), norm=norm)[0]  # the first seed: several would overlap unreadably
            steps = run.cfg.train.steps
            for step, values in run.tagged("grad_diff").iterrows():
                ax.plot(np.asarray(values.index) * run.cfg.optim.lr, values.values, color=cmap(step / steps),
                        lw=0.8, alpha=0.7)
            ax.set_xscale("log"), ax.set_yscale("log")
            ax.set_title(f"{model.upper()}: {NORM_STYLE[norm][0]} (lr {run.cfg.optim.lr:g}, seed {run.cfg.seed})",
                         fontsize=10)
            ax.set_xlabel("Step size (in the direction of ∇f(x))")
        row[0].set_ylabel("Gradient difference (ℓ2-norm)")
        bar = fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, steps)), ax=list(row))
        bar.set_label("Time step")
    fig.suptitle("Gradient predictiveness")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def claims(runs):
    out = []
    for model in ("vgg", "dln"):
        chosen = by_model(runs, model)
        if not chosen:
            continue
        worst = {n: [float(np.median(r.tagged("grad_diff").max(1))) for r in select(chosen, norm=n)] for n in NORMS}
        peak = {n: [float(r.tagged("grad_diff").max(1).max()) for r in select(chosen, norm=n)] for n in NORMS}
        out.append(Claim(
            claim=f"{model.upper()}: gradients are more predictive with BN (max_m d_m: median and peak over training)",
            paper=PAPER[model],
            measured=f"median standard {spread(worst['none'])}, BN {spread(worst['batch'])}; "
                     f"peak standard {spread(peak['none'])}, BN {spread(peak['batch'])}",
            holds=bool(np.mean(worst["batch"]) < np.mean(worst["none"])
                       and np.mean(peak["batch"]) < np.mean(peak["none"])),
            values={"median": worst, "peak": peak}))
    return out
