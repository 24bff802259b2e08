"""Section 3.1: sensitivity to the learning rate, standard vs BatchNorm: VGG's final training accuracy and
the DLN's final training loss against the learning rate. Claim 7: BatchNorm tolerates a wider range of
learning rates. A VGG run "trains" when it does not diverge and ends above 20% training accuracy (twice
chance); a DLN run when it does not diverge and ends at no more than half its initial loss."""

import matplotlib.pyplot as plt
import numpy as np

from experiments.lib.claims import Band, Quantity, compare, final_train_accuracy, judged, seeds_of
from experiments.lib.plotting import NORM_STYLE, caption, seeds_in
from experiments.lib.runs import by_model, classifies, models_in, select

ORDER = 14  # its place in the paper: after the figures, section 3.1

NORMS = ("none", "batch")
PROGRESS = 0.5  # DLN: final / initial loss at most this
ACCURACY = 20.0  # VGG: final training accuracy (%) above this


def outcome(run):
    """(final value or nan if diverged, trains): final training accuracy (a classifier: VGG) or loss (the DLN)."""
    diverged = run.summary.get("status") == "diverged"
    if classifies(run):
        final = final_train_accuracy(run)
        return final, bool(not diverged and final > ACCURACY)
    final = run.summary.get("final_loss")
    trains = not diverged and final is not None and final <= PROGRESS * run.series("loss").iloc[0]
    return (np.nan if diverged else final), bool(trains)


def describe(runs) -> str:
    finals = [outcome(r)[0] for r in runs]
    ok = [f for f in finals if np.isfinite(f)]
    text = Quantity(ok, geometric=not classifies(runs[0])).text() if ok else ""
    if len(ok) < len(finals):
        text += f"{', ' if ok else ''}{len(finals) - len(ok)}/{len(finals)} diverged"
    return text


def draw_panel(ax, runs):
    vgg = classifies(runs[0])  # accuracy, on linear axes
    lrs = sorted({r.cfg.optim.lr for r in runs})
    marker_y = 5 if vgg else max(r.series("loss").iloc[0] for r in runs) * 3
    for norm in NORMS:
        label, color = NORM_STYLE[norm]
        means, diverged = [], []
        for lr in lrs:
            finals = [outcome(r)[0] for r in select(runs, norm=norm, lr=lr)]
            ok = [f for f in finals if np.isfinite(f)]
            means.append((np.mean(ok) if vgg else np.exp(np.mean(np.log(ok)))) if ok else np.nan)
            if len(ok) < len(finals):
                diverged.append(lr)
            if ok:
                ax.plot([lr] * len(ok), ok, ".", color=color, alpha=0.5)
        ax.plot(lrs, means, "o-", color=color, label=label)
        if diverged:
            ax.plot(diverged, [marker_y] * len(diverged), "x", color=color, ms=10, mew=2, label=f"{label}: diverged")
    ax.set_xscale("log"), ax.set_xlabel("Learning rate")
    if vgg:
        ax.axhline(ACCURACY, color="k", ls=":", lw=1), ax.set_ylim(0, 100)
        ax.set_ylabel("Final training accuracy (%)")
    else:
        ax.set_yscale("log"), ax.set_ylabel("Final training loss")
    ax.set_title(f"{'VGG' if vgg else 'Deep linear network'}: sensitivity to the learning rate"), ax.legend(fontsize=8)


def draw(runs, path):
    models = models_in(runs)
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        draw_panel(ax, by_model(runs, model))
    fig.tight_layout()
    n = seeds_in(runs)
    caption(fig, f"Dots: each seed's final value; line: the mean over {n} seed{'s' if n > 1 else ''} (geometric for "
                 "the DLN's losses) of those that did not diverge; x: a rate at which some seed diverged.")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


LR_BAND = Band(1.1)  # the sweep's rates are a factor 3 apart: the same rate is a tie, the next one is not


def largest_training_lr(runs, lrs) -> float:
    """The largest rate of the sweep at which the run trains, for one seed's runs of one network; when none
    does, one grid step below the sweep's smallest rate."""
    working = [lr for lr in lrs if all(outcome(r)[1] for r in select(runs, lr=lr))]
    return max(working) if working else lrs[0] * lrs[0] / lrs[1]


def model_claim(runs):
    model = runs[0].cfg.model.name
    lrs = sorted({r.cfg.optim.lr for r in runs})
    seeds = seeds_of(runs)
    largest = {n: Quantity([largest_training_lr(select(runs, norm=n, seed=s), lrs) for s in seeds], geometric=True)
               for n in NORMS}
    accuracy = classifies(runs[0])
    what = "accuracy" if accuracy else "loss"
    text = "; ".join(f"{NORM_STYLE[n][0]}: largest lr that trains {largest[n].text()} (per seed: "
                     f"{', '.join(f'{v:g}' for v in largest[n].per_seed)})" for n in NORMS)
    text += f"; final training {what} standard vs BN by lr: " + ", ".join(
        f"{lr:g}: {describe(select(runs, norm='none', lr=lr))} vs {describe(select(runs, norm='batch', lr=lr))}"
        for lr in lrs)
    trains = (f"ends above {ACCURACY:g}% training accuracy" if accuracy
              else f"ends at or below {PROGRESS:g}x its initial loss")
    return judged(f"{model.upper()}: BatchNorm trains at larger learning rates than standard",
                  "Sec 3.1: 'This, in turn, enables us to use a broader range of (and thus larger) learning rates'",
                  f"in each seed, the largest learning rate of the sweep at which the run trains (does not diverge and "
                  f"{trains}; one grid step below the sweep when none does); BN's larger than standard's (geometric "
                  "mean over seeds); the final values at every rate are reported",
                  f"two rates tie {LR_BAND.describe()} (the same rate of the sweep)",
                  "sec 3.1 and Fig 11: BN robust to a broad range of learning rates", text,
                  {"none": largest["none"], "batch": largest["batch"]},
                  lambda v: compare(v["batch"], ">", v["none"], LR_BAND), seeds)
def claims(runs):
    return [model_claim(by_model(runs, m)) for m in models_in(runs)]
