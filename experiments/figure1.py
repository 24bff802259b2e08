"""Figure 1: VGG with and without BatchNorm at learning rates 0.1 and 0.5: (a) training accuracy, (b) test
accuracy, (c) activation distributions of layers #3 and #11 over training (lr 0.1). Claim 1: BN trains
faster at lr 0.1; at lr 0.5 the standard network fails (about 10% accuracy) while BN trains."""

import matplotlib.pyplot as plt

from experiments.lib.activations import ridge
from experiments.lib.claims import (
    ACCURACY_BAND,
    all_of,
    by_seed,
    checkpoint_accuracies,
    compare,
    judged,
    per_seed,
    seeds_of,
    steps_to_reach,
)
from experiments.lib.plotting import NORM_STYLE, accuracy_panel, bands_caption, caption
from experiments.lib.runs import select

ORDER = 1  # its place in the paper: Figure 1

NORMS = ("none", "batch")
LAYERS = (3, 11)
FAILS, TRAINS = 15.0, 30.0  # final test accuracy (%) below which a run failed / above which it trains
REACH = 60.0  # training accuracy (%) whose first step is reported


LR_COLORS = ("tab:red", "tab:green", "tab:blue", "tab:purple")  # the paper's: red for lr 0.1, green for 0.5
STYLES = {"none": "-", "batch": "--"}  # the paper's: dashed is BatchNorm


def draw(runs, path):
    lrs = sorted({r.cfg.optim.lr for r in runs})
    fig = plt.figure(figsize=(15, 8), layout="constrained")  # no empty band under the title
    grid = fig.add_gridspec(2, 4)
    for col, split in enumerate(("train", "test")):
        ax = fig.add_subplot(grid[0, 2 * col:2 * col + 2])
        for lr, color in zip(lrs, LR_COLORS, strict=False):
            accuracy_panel(ax, select(runs, lr=lr), NORMS, split, label_suffix=f", LR={lr:g}",
                           colors={n: color for n in NORMS}, styles=STYLES)
        ax.set_title(f"({'ab'[col]}) {split} accuracy"), ax.legend(fontsize=8)
    base = min(lrs, key=lambda v: abs(v - 0.1))
    for j, layer in enumerate(LAYERS):
        for k, norm in enumerate(NORMS):
            ax = fig.add_subplot(grid[1, 2 * j + k])
            run = by_seed(select(runs, norm=norm, lr=base))[0]
            unit = ridge(ax, run, layer, LR_COLORS[lrs.index(base)])
            ax.set_title(f"(c) layer #{layer}, {NORM_STYLE[norm][0]} (lr {base:g}, seed {run.cfg.seed}, unit {unit})",
                         fontsize=9)
    fig.suptitle(f"VGG on {runs[0].summary.get('data', 'CIFAR-10')}: standard vs BatchNorm")
    caption(fig, f"(a), (b): {bands_caption(runs)} (c): one sampled unit's distribution over the batch at steps "
                 "through training, one seed.")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def test_accuracy(run) -> float:
    """Final test accuracy (evaluation mode); a diverged run has none: chance, 10%."""
    return float(run.summary.get("final_eval_test_accuracy", 10.0)) if run.summary.get("status") == "finished" \
        else 10.0


def claims(runs):
    low, high = min(r.cfg.optim.lr for r in runs), max(r.cfg.optim.lr for r in runs)
    seeds = seeds_of(runs)
    early = {n: checkpoint_accuracies(select(runs, norm=n, lr=low)) for n in NORMS}
    reach = {n: per_seed(select(runs, norm=n, lr=low), lambda r: steps_to_reach(r, REACH)) for n in NORMS}
    test = {(n, lr): per_seed(select(runs, norm=n, lr=lr), test_accuracy) for n in NORMS for lr in (low, high)}
    speed = {f"{n}@{k}": q for n in NORMS for k, q in early[n].items()}
    at = "; ".join(f"at {k} of the run: standard {early['none'][k].text(unit='%')}, BN "
                   f"{early['batch'][k].text(unit='%')}" for k in early["none"])
    band = f"two accuracies tie {ACCURACY_BAND.describe()}"
    return [
        judged(f"VGG: BN trains faster than standard at lr {low:g}",
               "Figure 1: 'There is a consistent gain in training speed in models with BatchNorm layers.'",
               "BN's training accuracy (the mean batch accuracy over the 2% of steps ending there) is higher than "
               f"standard's at each of 5%, 10% and 20% of the run (a diverged run counts as chance, 10%); steps to "
               f"reach {REACH:g}% reported", band,
               "Fig 1a: at 1k steps about 80% BN, 60-70% standard by 1-2k",
               f"{at}; steps to {REACH:g}% (reported): standard {reach['none'].text(missing='not reached')}, BN "
               f"{reach['batch'].text(missing='not reached')}",
               speed, lambda v: all_of(*(compare(v[f"batch@{k}"], ">", v[f"none@{k}"], ACCURACY_BAND)
                                         for k in early["none"])), seeds),
        judged(f"VGG at lr {high:g}: the standard network fails while BN trains",
               "Figure 1 (b): at LR=0.5 the standard network's test accuracy stays at about 10%, BatchNorm's rises "
               "to about 80%",
               f"final test accuracy: standard below {FAILS:g}% (a diverged run counts as chance) and BN above "
               f"{TRAINS:g}%", band, "Fig 1b: standard about 10%, BN about 80%",
               f"final test accuracy standard {test[('none', high)].text(unit='%')}, BN "
               f"{test[('batch', high)].text(unit='%')}",
               {"none": test[("none", high)], "batch": test[("batch", high)]},
               lambda v: all_of(compare(v["none"], "<", FAILS, ACCURACY_BAND),
                                compare(v["batch"], ">", TRAINS, ACCURACY_BAND)), seeds),
        judged(f"VGG at lr {low:g}: BN ends with a higher test accuracy than standard",
               "Appendix A.1: 'Our network achieves a test accuracy of 83% with BatchNorm and 80% without'",
               "final test accuracy, BN above standard", band, "83% BN vs 80% standard (15k steps, no augmentation)",
               f"final test accuracy standard {test[('none', low)].text(unit='%')}, BN "
               f"{test[('batch', low)].text(unit='%')}",
               {"none": test[("none", low)], "batch": test[("batch", low)]},
               lambda v: compare(v["batch"], ">", v["none"], ACCURACY_BAND), seeds),
    ]
