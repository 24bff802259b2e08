"""Figure 2: VGG standard, BatchNorm and "noisy" BatchNorm at lr 0.1: training accuracy and activation
distributions of layers #2, #9, #13; and the same noise added to the network without BatchNorm.
Claim 2 (performance part): noisy BN trains close to BN and clearly better than standard. Claim 3: the
noise stops a network without BatchNorm from training."""

import matplotlib.pyplot as plt
import numpy as np

from experiments.lib.activations import ridge
from experiments.lib.claims import Claim, checkpoint_accuracies, final_train_accuracy, spread
from experiments.lib.plotting import NORM_STYLE, accuracy_panel
from experiments.lib.runs import select

ORDER = 2  # its place in the paper: Figure 2

NORMS = ("none", "batch", "noisy_batch")
LAYERS = (2, 9, 13)
CLOSE, CLEARLY = 10.0, 5.0  # accuracy points: "close to BN" within, "clearly better than standard" by more
NOT_TRAINING = 20.0  # final training accuracy (%) below which a run has not trained (twice chance)


def draw(runs, path):
    fig = plt.figure(figsize=(15, 11), layout="constrained")  # no empty band under the title
    grid = fig.add_gridspec(4, 3, height_ratios=[1.1, 1, 1, 1])
    ax = fig.add_subplot(grid[0, :])
    accuracy_panel(ax, runs, (*NORMS, "none+noise"))
    ax.set_title(f"Training accuracy, lr {runs[0].cfg.optim.lr:g}"), ax.legend(fontsize=8)
    for i, norm in enumerate(NORMS):
        for j, layer in enumerate(LAYERS):
            sub = fig.add_subplot(grid[1 + i, j])
            unit = ridge(sub, select(runs, norm=norm)[0], layer, NORM_STYLE[norm][1], count=10)
            sub.set_title(f"{NORM_STYLE[norm][0]}, layer #{layer} (unit {unit})", fontsize=9)
    fig.suptitle("VGG: BatchNorm with noise injected after it (Algorithm 1)")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def claims(runs):
    early = {n: checkpoint_accuracies(select(runs, norm=n)) for n in NORMS}
    mean = {n: {k: float(np.nanmean(v)) if np.isfinite(v).any() else 0.0 for k, v in e.items()}
            for n, e in early.items()}
    close = all(abs(mean["noisy_batch"][k] - mean["batch"][k]) <= CLOSE
                and mean["noisy_batch"][k] > mean["none"][k] + CLEARLY for k in mean["none"])
    final = {n: [final_train_accuracy(r) for r in select(runs, norm=n)] for n in ("none", "none+noise")}
    text = "; ".join(f"at {k}: " + ", ".join(f"{NORM_STYLE[n][0]} {spread(early[n][k])}%" for n in NORMS)
                     for k in early["none"])
    return [
        Claim(claim="VGG: noisy BN trains close to BN and clearly better than standard",
              quote="Sec 2.1: 'the performance difference between models with BatchNorm layers, and \"noisy\" "
                    "BatchNorm layers is almost non-existent. Also, both these networks perform much better than "
                    "standard networks.'",
              rule=f"at each of 5%, 10% and 20% of the run, noisy BN's training accuracy (mean over seeds) is within "
                   f"{CLOSE:g} points of BN's and more than {CLEARLY:g} points above standard's",
              paper="Fig 2: noisy BN's curve next to BN's, both above standard",
              measured=text, holds=bool(close), values=early),
        Claim(claim="VGG: the same noise on the network without BatchNorm stops it from training",
              quote="Sec 2.1: 'adding the same amount of noise to the activations of the standard (non-BatchNorm) "
                    "network prevents it from training entirely.'",
              rule=f"final training accuracy below {NOT_TRAINING:g}% (chance is 10%) for every seed; a diverged run "
                   "counts as not training",
              paper="no training at all",
              measured=f"standard + noise {_accuracy(final['none+noise'])} vs standard {_accuracy(final['none'])}",
              holds=bool(np.all(np.nan_to_num(final["none+noise"], nan=0.0) < NOT_TRAINING)), values=final),
    ]


def _accuracy(values) -> str:
    """Final training accuracies over seeds; a diverged run has none (nan)."""
    finite = [v for v in values if np.isfinite(v)]
    lost = len(values) - len(finite)
    return ((f"{spread(finite)}%" if finite else "") + (", " if finite and lost else "")
            + (f"{lost}/{len(values)} diverged" if lost else ""))
