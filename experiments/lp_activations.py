"""Figure 6: distributions of a sampled unit of VGG's layer #11 over training under every normalization
(the input of the ReLU: the normalization layer's output). The paper attaches no claim to it: l_p
normalizations do not keep the distributions stable either, yet train as well as BatchNorm (figure 5)."""

import matplotlib.pyplot as plt

from experiments.lib.activations import ridge
from experiments.lib.claims import by_seed
from experiments.lib.plotting import LP_FIGURE_NORMS, NORM_STYLE
from experiments.lib.runs import select

ORDER = 6  # its place in the paper: Figure 6

LAYER = 11


def draw(runs, path):
    fig, axes = plt.subplots(1, len(LP_FIGURE_NORMS), figsize=(3.6 * len(LP_FIGURE_NORMS), 4.2))
    for ax, norm in zip(axes, LP_FIGURE_NORMS, strict=True):
        run = by_seed(select(runs, norm=norm))[0]
        unit = ridge(ax, run, LAYER, NORM_STYLE[norm][1], count=10)
        ax.set_title(f"{NORM_STYLE[norm][0]} (seed {run.cfg.seed}, unit {unit})", fontsize=9)
    fig.suptitle(f"VGG layer #{LAYER}: activation distributions over training")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def claims(runs):
    return []
