"""Figure 4: VGG's loss landscape along the gradient, gradient predictiveness and effective
beta-smoothness, standard vs BatchNorm. Claim 5 (VGG part): BN's are smaller and less spiky, early in
training above all."""

from experiments.lib.landscape import standard_vs_bn_claims, standard_vs_bn_figure

ORDER = 4  # its place in the paper: Figure 4


def draw(runs, path):
    standard_vs_bn_figure(runs, "VGG", path)


def claims(runs):
    return standard_vs_bn_claims(
        runs, "VGG", quote="Figure 4: 'There is a clear improvement in all of these measures in networks with "
                           "BatchNorm, indicating a more well-behaved loss landscape.'",
        paper_early="Fig 4: standard's bands far wider; gradient predictiveness up to about 250 "
                                 "standard, mostly below 40 BN",
        paper_all="Fig 4: standard above BN throughout")
