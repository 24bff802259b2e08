"""One module per figure of the paper (SPEC section 4): the runs it needs (configs/experiment/<name>.yaml),
how it is drawn, and the claims it checks. `FIGURES` maps figure names to modules."""

FIGURES = {
    "figure3": "experiments.figure3",
    "lp-training": "experiments.lp_training",
    "dln-activations": "experiments.dln_activations",
    "dln-landscape": "experiments.dln_landscape",
    "gradient-predictiveness": "experiments.gradient_predictiveness",
    "lp-landscape-dln": "experiments.lp_landscape_dln",
    "lr-sensitivity": "experiments.lr_sensitivity",
}
