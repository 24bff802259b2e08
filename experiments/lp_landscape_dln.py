"""Figure 13: training loss and landscape measures of the DLN for every normalization.
Claim 6 (landscape part): every l_p normalization smooths the landscape like BatchNorm does."""

import matplotlib.pyplot as plt

from experiments.common import Claim
from experiments.landscape import compare, draw_landscape_panels
from experiments.lp_training import NORMS, draw_loss_panel


def draw(runs, path):
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    draw_loss_panel(axes[0, 0], runs)
    axes[0, 0].legend(fontsize=8)
    draw_landscape_panels([axes[1, 0], axes[0, 1], axes[1, 1]], runs, NORMS)
    for ax, letter in zip([axes[0, 0], axes[1, 0], axes[0, 1], axes[1, 1]], "abcd", strict=True):
        ax.set_title(f"({letter})")
    fig.suptitle("Deep linear network: every normalization")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def claims(runs):
    out = []
    for norm in NORMS[1:]:
        ok, text, values = compare(runs, norm, early=False)
        out.append(Claim(claim=f"DLN: {norm} has smaller loss range, gradient predictiveness and beta than standard "
                               "(median and peak over training, norm vs standard)",
                         paper="Fig 13: all normalizations below standard", measured=text, holds=ok, values=values))
    return out
