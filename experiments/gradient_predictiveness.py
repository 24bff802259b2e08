"""Figure 11: gradient change d_m against the step size m * lr, one line per probe step, coloured from
early (blue) to late (red), standard vs BatchNorm, VGG and DLN. Claim 5 (gradient part): gradients of
the BN network are more predictive (smaller d_m) than the standard network's."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from experiments.lib.claims import by_seed, judged, seeds_of
from experiments.lib.landscape import BAND_TEXT, UPPER, compare_landscape
from experiments.lib.plotting import NORM_STYLE, caption
from experiments.lib.runs import by_model, models_in, select

ORDER = 11  # its place in the paper: Figure 11

NORMS = ("none", "batch")
PAPER = {"vgg": "Fig 11a: standard up to about 250, BN mostly below about 40",
         "dln": "Fig 11b: standard up to about 1e13, BN about 1e5"}


def draw(runs, path):
    models = models_in(runs)
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 4 * len(models)), squeeze=False, layout="constrained")
    cmap = plt.get_cmap("coolwarm")
    for row, model in zip(axes, models, strict=True):
        for ax, norm in zip(row, NORMS, strict=True):
            run = by_seed(select(by_model(runs, model), norm=norm))[0]  # one seed: several would overlap unreadably
            steps = run.cfg.train.steps
            for step, values in run.tagged("grad_diff").iterrows():
                ax.plot(np.asarray(values.index) * run.cfg.optim.lr, values.values, color=cmap(step / steps),
                        lw=0.8, alpha=0.7)
            ax.set_xscale("log")
            if model == "vgg":  # Fig 11a: a linear gradient difference, plain step-size labels (0.1, 0.2, 0.4)
                sizes = np.asarray(run.tagged("grad_diff").columns, dtype=float) * run.cfg.optim.lr
                ax.set_xticks([v for v in (0.05, 0.1, 0.2, 0.4, 0.8) if sizes.min() <= v <= sizes.max()])
                ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            else:  # Fig 11b: logarithmic
                ax.set_yscale("log")
            ax.set_title(f"{model.upper()}: {NORM_STYLE[norm][0]} (lr {run.cfg.optim.lr:g}, seed {run.cfg.seed})",
                         fontsize=10)
            ax.set_xlabel("Step size (in the direction of ∇f(x))")
        row[0].set_ylabel("Gradient difference (ℓ2-norm)")
        bar = fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, steps)), ax=list(row))
        bar.set_label("Time step")
    fig.suptitle("Gradient predictiveness")
    caption(fig, "One line per measured step, one seed; the claims below use every seed.")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def claims(runs):
    out = []
    for model in models_in(runs):
        chosen = by_model(runs, model)
        if not chosen:
            continue
        text, q, decide = compare_landscape(chosen, "batch", early=False, measures=("grad_pred",))
        out.append(judged(
            f"{model.upper()}: gradients are more predictive with BN",
            "Figure 11: 'We observe that gradients are significantly more predictive in networks with BatchNorm "
            "and change slowly in a given local neighborhood.'",
            "max_m d_m per probe step over the whole run (steps weighted by the steps until the next measurement): "
            f"BN's peak and {UPPER:.0%} quantile over steps, geometric mean over seeds, against standard's: neither "
            "clearly above and at least one clearly below; medians recorded, not judged",
            BAND_TEXT, PAPER[model], text.replace("gradient predictiveness: ", "BN vs standard: "), q, decide,
            seeds_of(chosen)))
    return out
