"""One module per figure of the paper (SPEC section 4): the runs it needs (configs/experiment/<name>.yaml),
how it is drawn, and the claims it checks. `FIGURES` maps figure names to modules."""

FIGURES = {
    "figure1": "experiments.figure1",
    "figure2": "experiments.figure2",
    "figure3": "experiments.figure3",
    "figure4": "experiments.figure4",
    "lp-training": "experiments.lp_training",
    "lp-activations": "experiments.lp_activations",
    "noisy-moments": "experiments.noisy_moments",
    "dln-activations": "experiments.dln_activations",
    "dln-landscape": "experiments.dln_landscape",
    "gradient-predictiveness": "experiments.gradient_predictiveness",
    "lp-landscape-vgg": "experiments.lp_landscape_vgg",
    "lp-landscape-dln": "experiments.lp_landscape_dln",
    "lr-sensitivity": "experiments.lr_sensitivity",
    "bn-scale": "experiments.bn_scale",
}
