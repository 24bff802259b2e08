"""Figure 10: loss landscape, gradient predictiveness and effective beta-smoothness of the DLN.
Claim 5 (DLN part): BN's measures are smaller than standard's, early in training above all."""

import matplotlib.pyplot as plt

from experiments.common import Claim
from experiments.landscape import EARLY, compare, draw_landscape_panels, figure_grid


def draw(runs, path):
    fig, axes = figure_grid(3)
    draw_landscape_panels(axes, runs, ("none", "batch"))
    for ax, letter in zip(axes, "abc", strict=True):
        ax.set_title(f"({letter})")
    fig.suptitle("Deep linear network: landscape along the gradient (multipliers %g-%g x lr)"
                 % (runs[0].cfg.probes.landscape.multipliers.start, runs[0].cfg.probes.landscape.multipliers.stop))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def claims(runs):
    early_ok, early_text, early_values = compare(runs, "batch", early=True)
    all_ok, all_text, all_values = compare(runs, "batch", early=False)
    return [
        Claim(claim=f"DLN: BN's loss range, gradient predictiveness and effective beta are smaller and less spiky "
                    f"than standard's early in training (first {EARLY:.0%} of steps; median and peak over steps, "
                    "BN vs standard)",
              paper="Fig 10: standard up to 1e14 early, BN about 1e4; beta 1e15 vs 1e7",
              measured=early_text, holds=early_ok, values=early_values),
        Claim(claim="DLN: the same over the whole run",
              paper="Fig 10: standard above BN except late in training",
              measured=all_text, holds=all_ok, values=all_values),
    ]
