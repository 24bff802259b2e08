"""Section 4: the standard deviation sigma_j of each BatchNorm layer's input (before normalization) in VGG,
over training: median over the layer's units, one line per layer. The paper notes that it "tends to be
large", which is what makes BatchNorm's rescaling by 1/sigma_j shrink gradients."""

import matplotlib.pyplot as plt
import numpy as np

from experiments.common import Claim, select, spread, steps_axis


def sigma_table(run, stat="bn_sigma_median"):
    m = run.metrics[run.metrics.metric == stat]
    return m.pivot_table(index="step", columns="layer", values="value")


def draw(runs, path):
    run = select(runs, norm="batch")[0]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    cmap = plt.get_cmap("viridis")
    for ax, stat in zip(axes, ("bn_sigma_median", "bn_sigma_max"), strict=True):
        table = sigma_table(run, stat)
        for k, layer in enumerate(table.columns):
            ax.plot(table.index, table[layer], color=cmap(k / max(1, len(table.columns) - 1)), label=f"#{layer}")
        ax.axhline(1, color="k", ls="--", lw=1)
        ax.set_yscale("log"), ax.set_ylabel(f"σ_j, {stat.split('_')[-1]} over units")
        steps_axis(ax, run.cfg.train.steps)
    axes[1].legend(fontsize=7, ncol=2, title="layer")
    fig.suptitle(f"VGG + BatchNorm: pre-normalization standard deviation, lr {run.cfg.optim.lr:g}")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def claims(runs):
    finals = [float(np.median(sigma_table(r).iloc[-1])) for r in select(runs, norm="batch")]
    firsts = [float(np.median(sigma_table(r).iloc[0])) for r in select(runs, norm="batch")]
    return [Claim(claim="VGG: the inputs of BatchNorm layers have a large standard deviation (median over layers "
                        "and units above 1 at the end of training)",
                  paper="sec 4: sigma_j 'tends to be large'",
                  measured=f"median sigma_j at the first probe step {spread(firsts)}, at the last {spread(finals)}",
                  holds=bool(np.mean(finals) > 1), values={"first": firsts, "last": finals})]
