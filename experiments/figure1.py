"""Figure 1: VGG with and without BatchNorm at learning rates 0.1 and 0.5: (a) training accuracy, (b) test
accuracy, (c) activation distributions of layers #3 and #11 over training (lr 0.1). Claim 1: BN trains
faster at lr 0.1; at lr 0.5 the standard network fails (about 10% accuracy) while BN trains."""

import matplotlib.pyplot as plt
import numpy as np

from experiments.lib.activations import ridge
from experiments.lib.claims import Claim, checkpoint_accuracies, spread, steps_to_reach
from experiments.lib.plotting import NORM_STYLE, accuracy_panel
from experiments.lib.runs import select

ORDER = 1  # its place in the paper: Figure 1

NORMS = ("none", "batch")
LAYERS = (3, 11)
FAILS, TRAINS = 15.0, 30.0  # final test accuracy (%) at or below which a run failed / at or above which it trains
REACH = 60.0  # training accuracy (%) whose first step is reported


def draw(runs, path):
    lrs = sorted({r.cfg.optim.lr for r in runs})
    fig = plt.figure(figsize=(15, 8), layout="constrained")  # no empty band under the title
    grid = fig.add_gridspec(2, 4)
    for col, split in enumerate(("train", "test")):
        ax = fig.add_subplot(grid[0, 2 * col:2 * col + 2])
        for lr, ls in zip(lrs, ("-", "--", ":"), strict=False):
            accuracy_panel(ax, select(runs, lr=lr), NORMS, split, ls=ls, label_suffix=f", LR={lr:g}")
        ax.set_title(f"({'ab'[col]}) {split} accuracy"), ax.legend(fontsize=8)
    for j, layer in enumerate(LAYERS):
        for k, norm in enumerate(NORMS):
            ax = fig.add_subplot(grid[1, 2 * j + k])
            unit = ridge(ax, select(runs, norm=norm, lr=min(lrs, key=lambda v: abs(v - 0.1)))[0], layer,
                         NORM_STYLE[norm][1])
            ax.set_title(f"(c) layer #{layer}, {NORM_STYLE[norm][0]} (unit {unit})", fontsize=9)
    fig.suptitle(f"VGG on CIFAR-10, standard vs BatchNorm ({runs[0].summary.get('data', 'CIFAR-10')})")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def test_accuracy(runs):
    return [r.summary.get("final_eval_test_accuracy", np.nan) if r.summary.get("status") == "finished" else np.nan
            for r in runs]


def claims(runs):
    low, high = min(r.cfg.optim.lr for r in runs), max(r.cfg.optim.lr for r in runs)
    early = {n: checkpoint_accuracies(select(runs, norm=n, lr=low)) for n in NORMS}
    faster = all(np.mean(early["batch"][k]) > np.mean(early["none"][k]) for k in early["none"])
    reach = {n: [steps_to_reach(r, REACH) for r in select(runs, norm=n, lr=low)] for n in NORMS}
    test = {(n, lr): test_accuracy(select(runs, norm=n, lr=lr)) for n in NORMS for lr in (low, high)}
    std_fails = bool(np.all(np.nan_to_num(test[("none", high)], nan=10.0) <= FAILS))
    bn_trains = bool(np.all(np.nan_to_num(test[("batch", high)], nan=0.0) >= TRAINS))
    at = "; ".join(f"at {k} of the run: standard {spread(early['none'][k])}%, BN {spread(early['batch'][k])}%"
                   for k in early["none"])
    return [
        Claim(claim=f"VGG: BN trains faster than standard at lr {low:g}",
              quote="Figure 1: 'There is a consistent gain in training speed in models with BatchNorm layers.'",
              rule="BN's training accuracy (mean over seeds of the mean batch accuracy over the 2% of steps ending "
                   "there) is higher than standard's at each of 5%, 10% and 20% of the run; steps to reach "
                   f"{REACH:g}% reported",
              paper="Fig 1a: at 1k steps about 80% BN, 60-70% standard by 1-2k",
              measured=f"{at}; steps to {REACH:g}%: standard {spread(reach['none'])}, BN {spread(reach['batch'])}",
              holds=bool(faster), values={"accuracy": early, f"steps_to_{REACH:g}": reach}),
        Claim(claim=f"VGG at lr {high:g}: the standard network fails while BN trains",
              quote="Figure 1 (b): at LR=0.5 the standard network's test accuracy stays at about 10%, BatchNorm's "
                    "rises to about 80%",
              rule=f"final test accuracy standard <= {FAILS:g}% (a diverged run counts as failed) and BN >= "
                   f"{TRAINS:g}%, every seed",
              paper="Fig 1b: standard about 10%, BN about 80%",
              measured=f"final test accuracy standard {spread(test[('none', high)])}%, BN "
                       f"{spread(test[('batch', high)])}%",
              holds=std_fails and bn_trains, values={"none": test[("none", high)], "batch": test[("batch", high)]}),
        Claim(claim=f"VGG at lr {low:g}: BN ends with a higher test accuracy than standard",
              quote="Appendix A.1: 'Our network achieves a test accuracy of 83% with BatchNorm and 80% without'",
              rule="mean over seeds of the final test accuracy, BN above standard",
              paper="83% BN vs 80% standard (15k steps, no augmentation)",
              measured=f"final test accuracy standard {spread(test[('none', low)])}%, "
                       f"BN {spread(test[('batch', low)])}%",
              holds=bool(np.mean(test[("batch", low)]) > np.mean(test[("none", low)])),
              values={"none": test[("none", low)], "batch": test[("batch", low)]}),
    ]
