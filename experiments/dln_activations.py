"""Figure 9: distributions of sampled DLN activations over training (layers 1, 11, 24), drawn as
quantile fans: the median line, and bands between the 25-75, 10-90 and 2-98% quantiles of one random
unit's values over the batch at each probe step."""

import matplotlib.pyplot as plt

from bnlab import store
from experiments.lib.claims import by_seed
from experiments.lib.plotting import NORM_STYLE, steps_axis
from experiments.lib.runs import select

ORDER = 9  # its place in the paper: Figure 9

NORMS = ("none", "batch")
BANDS = ((0.02, 0.98, 0.15), (0.1, 0.9, 0.25), (0.25, 0.75, 0.4))


def quantile_fan(ax, run, layer, color):
    """Fan of the first sampled unit of `layer`; returns that unit's index."""
    m = run.metrics[run.metrics.layer == layer]
    tags = store.split_metric(m.metric)
    quantile_rows = tags.base.str.startswith("act_q").to_numpy()
    m, tags = m[quantile_rows], tags[quantile_rows]
    unit = int(tags.unit.min())
    mine = (tags.unit == unit).to_numpy()
    q = {float(base[len("act_q"):]): rows.set_index("step")["value"]
         for base, rows in m[mine].groupby(tags.base[mine].to_numpy())}
    for lo, hi, alpha in BANDS:
        if lo in q and hi in q:
            ax.fill_between(q[lo].index, q[lo].values, q[hi].values, color=color, alpha=alpha, linewidth=0)
    ax.plot(q[0.5].index, q[0.5].values, color=color, lw=1)
    return unit


def draw(runs, path):
    layers = list(runs[0].cfg.probes.activations.layers)
    fig, axes = plt.subplots(len(NORMS), len(layers), figsize=(4.2 * len(layers), 3.2 * len(NORMS)), squeeze=False)
    for i, norm in enumerate(NORMS):
        run = by_seed(select(runs, norm=norm))[0]
        for j, layer in enumerate(layers):
            ax = axes[i, j]
            unit = quantile_fan(ax, run, layer, NORM_STYLE[norm][1])
            ax.set_title(f"{NORM_STYLE[norm][0]}, layer #{layer}, unit {unit} (seed {run.cfg.seed})", fontsize=9)
            steps_axis(ax, run.cfg.train.steps)
    fig.suptitle("Deep linear network: activation distributions over training (quantiles 2/10/25/50/75/90/98%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def claims(runs):
    return []  # Figure 9 illustrates; the paper attaches no claim to it
