"""Figure 13: training loss and landscape measures of the DLN for every normalization.
Claim 6 (landscape part): every l_p normalization smooths the landscape like BatchNorm does."""

from experiments.lib.landscape import every_norm_claims, every_norm_figure
from experiments.lib.plotting import LP_FIGURE_NORMS, loss_panel

ORDER = 13  # its place in the paper: Figure 13


def draw(runs, path):
    every_norm_figure(runs, LP_FIGURE_NORMS, lambda ax, r: loss_panel(ax, r, LP_FIGURE_NORMS),
                      "Deep linear network: every normalization", path)


def claims(runs):
    return every_norm_claims(runs, LP_FIGURE_NORMS[1:], "DLN",
                             "Figure 13: 'networks with any normalization strategy have improved performance and "
                             "smoothness of the loss landscape over standard training.'",
                             "Fig 13: all normalizations below standard")
