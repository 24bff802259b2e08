"""Figure 11 (DLN panel): gradient change d_m against the step size m * lr, one line per probe step,
coloured from early (blue) to late (red). Claim 5 (gradient part): gradients of the BN network are more
predictive (smaller d_m) than the standard network's."""

import matplotlib.pyplot as plt
import numpy as np

from experiments.common import NORM_STYLE, Claim, select, spread

NORMS = ("none", "batch")


def draw(runs, path):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    cmap = plt.get_cmap("coolwarm")
    for ax, norm in zip(axes, NORMS, strict=True):
        run = select(runs, norm=norm)[0]  # the first seed: lines of several seeds would overlap unreadably
        table = run.tagged("grad_diff")
        steps = run.cfg.train.steps
        for step, row in table.iterrows():
            ax.plot(np.asarray(row.index) * run.cfg.optim.lr, row.values, color=cmap(step / steps), lw=0.8, alpha=0.7)
        ax.set_xscale("log"), ax.set_yscale("log"), ax.set_title(NORM_STYLE[norm][0])
        ax.set_xlabel("Step size (in the direction of ∇f(x))")
    axes[0].set_ylabel("Gradient difference (ℓ2-norm)")
    bar = fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, runs[0].cfg.train.steps)), ax=axes)
    bar.set_label("Time step")
    fig.suptitle("Deep linear network: gradient predictiveness (seed %d)" % runs[0].cfg.seed)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def claims(runs):
    worst = {n: [float(np.median(r.tagged("grad_diff").max(1))) for r in select(runs, norm=n)] for n in NORMS}
    peak = {n: [float(r.tagged("grad_diff").max(1).max()) for r in select(runs, norm=n)] for n in NORMS}
    return [Claim(claim="DLN: gradients are more predictive with BN (max_m d_m: median and peak over training)",
                  paper="Fig 11b: standard up to about 1e13, BN about 1e5",
                  measured=f"median standard {spread(worst['none'])}, BN {spread(worst['batch'])}; "
                           f"peak standard {spread(peak['none'])}, BN {spread(peak['batch'])}",
                  holds=bool(np.mean(worst["batch"]) < np.mean(worst["none"])
                             and np.mean(peak["batch"]) < np.mean(peak["none"])),
                  values={"median": worst, "peak": peak})]
