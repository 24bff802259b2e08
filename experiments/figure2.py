"""Figure 2: VGG standard, BatchNorm and "noisy" BatchNorm at lr 0.1: training accuracy and activation
distributions of layers #2, #9, #13; and the same noise added to the network without BatchNorm.
Claim 2 (performance part): noisy BN trains close to BN and clearly better than standard. Claim 3: the
noise stops a network without BatchNorm from training."""

import matplotlib.pyplot as plt
import numpy as np

from experiments.lib.activations import ridge
from experiments.lib.claims import (
    ACCURACY_BAND,
    all_of,
    by_seed,
    checkpoint_accuracies,
    compare,
    final_train_accuracy,
    judged,
    per_seed,
    seeds_of,
)
from experiments.lib.plotting import NORM_STYLE, accuracy_panel, bands_caption, caption
from experiments.lib.runs import select

ORDER = 2  # its place in the paper: Figure 2

NORMS = ("none", "batch", "noisy_batch")
LAYERS = (2, 9, 13)
CLOSE, CLEARLY = 10.0, 5.0  # accuracy points: "close to BN" within, "clearly better than standard" by more
NOT_TRAINING = 20.0  # final training accuracy (%) below which a run has not trained (twice chance)


# The paper's Figure 2: one solid line per network, dark red, blue and pink (and grey for the noise alone)
COLORS = {"none": "#a31621", "batch": "#1f6fe5", "noisy_batch": "#f06ca8", "none+noise": "tab:gray"}


def draw(runs, path):
    fig = plt.figure(figsize=(15, 11), layout="constrained")  # no empty band under the title
    grid = fig.add_gridspec(4, 3, height_ratios=[1.1, 1, 1, 1])
    ax = fig.add_subplot(grid[0, :])
    accuracy_panel(ax, runs, (*NORMS, "none+noise"), colors=COLORS)
    ax.set_title(f"Training accuracy, lr {runs[0].cfg.optim.lr:g}"), ax.legend(fontsize=8)
    for i, norm in enumerate(NORMS):
        run = by_seed(select(runs, norm=norm))[0]
        for j, layer in enumerate(LAYERS):
            sub = fig.add_subplot(grid[1 + i, j])
            unit = ridge(sub, run, layer, COLORS[norm], count=10)
            sub.set_title(f"{NORM_STYLE[norm][0]}, layer #{layer} (seed {run.cfg.seed}, unit {unit})", fontsize=9)
    fig.suptitle("VGG: BatchNorm with noise injected after it (Algorithm 1)")
    caption(fig, f"Top: {bands_caption(runs)} Below: one sampled unit's distribution over the batch at steps "
                 "through training, one seed.")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def claims(runs):
    seeds = seeds_of(runs)
    early = {n: checkpoint_accuracies(select(runs, norm=n)) for n in NORMS}
    final = {n: per_seed(select(runs, norm=n), final_or_chance) for n in ("none", "none+noise")}
    text = "; ".join(f"at {k}: " + ", ".join(f"{NORM_STYLE[n][0]} {early[n][k].text(unit='%')}" for n in NORMS)
                     for k in early["none"])

    def close(v):
        return all_of(*(all_of(compare(abs(v[f"noisy_batch@{k}"] - v[f"batch@{k}"]), "<", CLOSE, ACCURACY_BAND),
                               compare(v[f"noisy_batch@{k}"] - v[f"none@{k}"], ">", CLEARLY, ACCURACY_BAND))
                        for k in early["none"]))

    band = f"an accuracy difference ties with its threshold {ACCURACY_BAND.describe()}"
    return [
        judged("VGG: noisy BN trains close to BN and clearly better than standard",
               "Sec 2.1: 'the performance difference between models with BatchNorm layers, and \"noisy\" BatchNorm "
               "layers is almost non-existent. Also, both these networks perform much better than standard "
               "networks.'",
               f"at each of 5%, 10% and 20% of the run, noisy BN's training accuracy is within {CLOSE:g} points of "
               f"BN's and more than {CLEARLY:g} points above standard's (a diverged run counts as chance, 10%)", band,
               "Fig 2: noisy BN's curve next to BN's, both above standard", text,
               {f"{n}@{k}": q for n in NORMS for k, q in early[n].items()}, close, seeds),
        judged("VGG: the same noise on the network without BatchNorm stops it from training",
               "Sec 2.1: 'adding the same amount of noise to the activations of the standard (non-BatchNorm) network "
               "prevents it from training entirely.'",
               f"final training accuracy below {NOT_TRAINING:g}% (chance is 10%; a diverged run counts as chance)",
               f"an accuracy ties with the threshold {ACCURACY_BAND.describe()}", "no training at all",
               f"standard + noise {final['none+noise'].text(unit='%')} vs standard {final['none'].text(unit='%')}"
               f"{_diverged(select(runs, norm='none+noise'))}",
               {"noise": final["none+noise"], "none": final["none"]},
               lambda v: compare(v["noise"], "<", NOT_TRAINING, ACCURACY_BAND), seeds),
    ]


def final_or_chance(run) -> float:
    """Final training accuracy; a diverged run has not trained: chance, 10%."""
    final = final_train_accuracy(run)
    return final if np.isfinite(final) else 10.0


def _diverged(runs) -> str:
    lost = sum(r.summary.get("status") == "diverged" for r in runs)
    return f" ({lost} of {len(runs)} seeds diverged)" if lost else ""
