"""Figure 5: training under every normalization: VGG training accuracy and DLN training loss (log).
Claim 6 (training part): the l_p normalizations train comparably to BatchNorm, and for the DLN l1 reaches
a lower loss than BatchNorm."""

import matplotlib.pyplot as plt
import numpy as np

from experiments.lib.claims import (
    ACCURACY_BAND,
    Band,
    all_of,
    checkpoint_accuracies,
    compare,
    judged,
    per_seed,
    seeds_of,
)
from experiments.lib.plotting import LP_FIGURE_NORMS, NORM_STYLE, accuracy_panel, bands_caption, caption, loss_panel
from experiments.lib.runs import by_model, models_in, select

ORDER = 5  # its place in the paper: Figure 5

COMPARABLE_POINTS = 10.0  # VGG: training accuracy within this many points of BN's


def draw(runs, path):
    models = models_in(runs)
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        chosen = by_model(runs, model)
        if model == "vgg":
            accuracy_panel(ax, chosen, LP_FIGURE_NORMS)
        else:
            loss_panel(ax, chosen, LP_FIGURE_NORMS)
        ax.legend(fontsize=8), ax.set_title(f"{model.upper()}, lr = {chosen[0].cfg.optim.lr:g}")
    fig.tight_layout()
    caption(fig, bands_caption(runs, log=True))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


QUOTE = ("Sec 3.3: 'We observe that all the normalization strategies offer comparable performance to BatchNorm. "
         "In fact, for deep linear networks, l1-normalization performs even better than BatchNorm.'")
LOSS_CHECKPOINTS = (0.2, 0.5, 1.0)  # DLN: fractions of the run where the losses are compared
COMPARABLE_FACTOR = 3.0  # DLN: training loss at most this many times BN's
# DLN losses settle on saddles shared by different runs (docs/calibration.md), a few percent apart: within 10%, a tie
LOSS_BAND = Band(1.1)
LP = LP_FIGURE_NORMS[2:]  # the paper's l_p normalizations


def _short(norm: str) -> str:
    return NORM_STYLE[norm][0].replace("Standard + ", "")


def vgg_claims(runs):
    early = {n: checkpoint_accuracies(select(runs, norm=n)) for n in LP_FIGURE_NORMS}
    checkpoints = list(early["none"])

    def comparable(v):
        return all_of(*(all_of(compare(v[f"{n}@{k}"] - v[f"batch@{k}"], ">", -COMPARABLE_POINTS, ACCURACY_BAND),
                               compare(v[f"{n}@{k}"], ">", v[f"none@{k}"], ACCURACY_BAND))
                        for n in LP for k in checkpoints))

    text = "; ".join(f"at {k}: " + ", ".join(f"{_short(n)} {early[n][k].text(unit='%')}" for n in LP_FIGURE_NORMS)
                     for k in checkpoints)
    return [judged("VGG: every l_p normalization trains comparably to BatchNorm", QUOTE,
                   f"at each of 5%, 10% and 20% of the run, each l_p network's training accuracy is at most "
                   f"{COMPARABLE_POINTS:g} points below BN's and above standard's (a diverged run counts as chance, "
                   "10%)", f"accuracies and their differences tie with a threshold {ACCURACY_BAND.describe()}",
                   "Fig 5a: l1, l2, l-inf curves next to BN's, above standard's", "training accuracy " + text,
                   {f"{n}@{k}": q for n in LP_FIGURE_NORMS for k, q in early[n].items()}, comparable, seeds_of(runs))]


def loss_at(run, fraction: float) -> float:
    """Training loss at `fraction` of the run (inf if it diverged before)."""
    loss = run.series("loss")
    step = min(int(round(fraction * run.cfg.train.steps)), run.cfg.train.steps - 1)
    return float(loss.loc[step]) if step in loss.index and np.isfinite(loss.loc[step]) else np.inf


def dln_claims(runs):
    at = {f"{f:.0%}": {n: per_seed(select(runs, norm=n), lambda r, f=f: loss_at(r, f), geometric=True)
                       for n in LP_FIGURE_NORMS} for f in LOSS_CHECKPOINTS}
    quantities = {f"{n}@{k}": q for k, per in at.items() for n, q in per.items()}

    def comparable(v):
        return all_of(*(all_of(compare(v[f"{n}@{k}"], "<", COMPARABLE_FACTOR * v[f"batch@{k}"], LOSS_BAND),
                               compare(v[f"{n}@{k}"], "<", v[f"none@{k}"], LOSS_BAND)) for n in LP for k in at))

    measured = "; ".join(f"at {k}: " + ", ".join(f"{_short(n)} {per[n].text()}" for n in LP_FIGURE_NORMS)
                         for k, per in at.items())
    final = at["100%"]
    band = f"two losses tie {LOSS_BAND.describe()}"
    seeds = seeds_of(runs)
    return [
        judged("DLN: every l_p normalization trains comparably to BatchNorm", QUOTE,
               f"at 20%, 50% and 100% of the run, each l_p network's training loss (geometric mean over seeds) is "
               f"below {COMPARABLE_FACTOR:g}x BN's and below standard's", band,
               "Fig 5b: l1, l2, l-inf curves near or below BN's, all far below standard's", "training loss " + measured,
               quantities, comparable, seeds),
        judged("DLN: l1 normalization reaches a lower loss than BatchNorm", QUOTE,
               "final training loss, geometric mean over seeds: l1's below BN's (equal losses are the same saddle: a "
               "tie, not a win)", band, "final loss about 1e2 (l1) vs 5e2 (BN)",
               f"final loss l1 {final['l1'].text()} vs BN {final['batch'].text()}",
               {"l1": final["l1"], "batch": final["batch"]}, lambda v: compare(v["l1"], "<", v["batch"], LOSS_BAND),
               seeds),
    ]


def claims(runs):
    out = []
    if by_model(runs, "vgg"):
        out += vgg_claims(by_model(runs, "vgg"))
    if by_model(runs, "dln"):
        out += dln_claims(by_model(runs, "dln"))
    return out
