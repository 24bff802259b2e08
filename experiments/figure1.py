"""Figure 1: VGG with and without BatchNorm at learning rates 0.1 and 0.5: (a) training accuracy, (b) test
accuracy, (c) activation distributions of layers #3 and #11 over training (lr 0.1). Claim 1: BN trains
faster at lr 0.1; at lr 0.5 the standard network fails (about 10% accuracy) while BN trains."""

import matplotlib.pyplot as plt
import numpy as np

from experiments.activations import ridge
from experiments.common import NORM_STYLE, Claim, accuracy_panel, final_train_accuracy, select, spread

NORMS = ("none", "batch")
LAYERS = (3, 11)
FAILS, TRAINS = 15.0, 30.0  # final test accuracy (%) at or below which a run failed / at or above which it trains


def draw(runs, path):
    lrs = sorted({r.cfg.optim.lr for r in runs})
    fig = plt.figure(figsize=(15, 8))
    grid = fig.add_gridspec(2, 4, hspace=0.35, wspace=0.3)
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
    half = runs[0].cfg.train.steps // 3

    def train_acc_at(norm, lr, step):
        return [float(r.series("accuracy").loc[:step].iloc[-max(1, step // 50):].mean())
                for r in select(runs, norm=norm, lr=lr)]

    early_std, early_bn = train_acc_at("none", low, half), train_acc_at("batch", low, half)
    final_std = [final_train_accuracy(r) for r in select(runs, norm="none", lr=low)]
    final_bn = [final_train_accuracy(r) for r in select(runs, norm="batch", lr=low)]
    test = {(n, lr): test_accuracy(select(runs, norm=n, lr=lr)) for n in NORMS for lr in (low, high)}
    faster = np.mean(early_bn) > np.mean(early_std) and np.mean(final_bn) > np.mean(final_std)
    std_fails = bool(np.all(np.nan_to_num(test[("none", high)], nan=10.0) <= FAILS))
    bn_trains = bool(np.all(np.nan_to_num(test[("batch", high)], nan=0.0) >= TRAINS))
    return [
        Claim(claim=f"VGG: BN trains faster than standard at lr {low:g} (training accuracy at 1/3 of the run and at "
                    "the end)",
              paper="Fig 1a: BN above standard throughout",
              measured=f"at step {half}: standard {spread(early_std)}%, BN {spread(early_bn)}%; final: standard "
                       f"{spread(final_std)}%, BN {spread(final_bn)}%",
              holds=bool(faster), values={"early": {"none": early_std, "batch": early_bn},
                                          "final": {"none": final_std, "batch": final_bn}}),
        Claim(claim=f"VGG at lr {high:g}: the standard network fails (final test accuracy <= {FAILS:g}%) while BN "
                    f"trains (>= {TRAINS:g}%)",
              paper="Fig 1b: standard about 10%, BN about 80%",
              measured=f"final test accuracy standard {spread(test[('none', high)])}%, BN "
                       f"{spread(test[('batch', high)])}% (diverged runs count as failed)",
              holds=std_fails and bn_trains, values={"none": test[("none", high)], "batch": test[("batch", high)]}),
        Claim(claim=f"VGG at lr {low:g}: BN ends with a higher test accuracy than standard",
              paper="83% BN vs 80% standard (15k steps, no augmentation)",
              measured=f"final test accuracy standard {spread(test[('none', low)])}%, "
                       f"BN {spread(test[('batch', low)])}%",
              holds=bool(np.mean(test[("batch", low)]) > np.mean(test[("none", low)])),
              values={"none": test[("none", low)], "batch": test[("batch", low)]}),
    ]
