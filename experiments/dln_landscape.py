"""Figure 10: loss landscape, gradient predictiveness and effective beta-smoothness of the DLN.
Claim 5 (DLN part): BN's measures are smaller than standard's, early in training above all."""

from experiments.lib.landscape import standard_vs_bn_claims, standard_vs_bn_figure

ORDER = 10  # its place in the paper: Figure 10


def draw(runs, path):
    standard_vs_bn_figure(runs, "Deep linear network", path)


def claims(runs):
    return standard_vs_bn_claims(runs, "DLN", quote="Figure 10: 'There is a clear improvement in each of these "
                                                    "measures of smoothness of the optimization landscape in "
                                                    "networks with BatchNorm layers.'",
                                 paper_early="Fig 10: standard up to 1e14 early, BN about 1e4; "
                                                          "beta 1e15 vs 1e7",
                                 paper_all="Fig 10: standard above BN except late in training")
