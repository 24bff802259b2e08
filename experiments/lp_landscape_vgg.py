"""Figure 12: training accuracy and landscape measures of VGG for every normalization.
Claim 6 (landscape part): every l_p normalization smooths the landscape like BatchNorm does."""

from experiments.lib.landscape import every_norm_claims, every_norm_figure
from experiments.lib.plotting import LP_FIGURE_NORMS, accuracy_panel

ORDER = 12  # its place in the paper: Figure 12


def draw(runs, path):
    every_norm_figure(runs, LP_FIGURE_NORMS, lambda ax, r: accuracy_panel(ax, r, LP_FIGURE_NORMS),
                      f"VGG: every normalization, lr {runs[0].cfg.optim.lr:g}", path)


def claims(runs):
    return every_norm_claims(runs, LP_FIGURE_NORMS[1:], "VGG", "Sec 3.3: 'all these techniques result in an improved "
                             "smoothness of the landscape that is similar to the effect of BatchNorm.' (Fig 12)",
                             "Fig 12: all normalizations below standard")
