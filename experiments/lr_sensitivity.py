"""Section 3.1 (DLN panel): final training loss against the learning rate, standard vs BatchNorm.
Claim 7: BatchNorm tolerates a wider range of learning rates. A run "trains" at a learning rate when it
does not diverge and ends at no more than half its initial loss."""

import matplotlib.pyplot as plt
import numpy as np

from experiments.common import NORM_STYLE, Claim, select, spread

NORMS = ("none", "batch")
PROGRESS = 0.5  # final / initial loss at most this


def outcome(run):
    """(final loss or nan if diverged, diverged, trains)."""
    final = run.summary.get("final_loss")
    diverged = run.summary.get("status") == "diverged"
    trains = not diverged and final is not None and final <= PROGRESS * run.series("loss").iloc[0]
    return (np.nan if diverged else final), diverged, bool(trains)


def describe(runs) -> str:
    finals = [outcome(r)[0] for r in runs]
    ok = [f for f in finals if np.isfinite(f)]
    text = spread(ok) if ok else ""
    if len(ok) < len(finals):
        text += f"{', ' if ok else ''}{len(finals) - len(ok)}/{len(finals)} diverged"
    return text


def draw(runs, path):
    fig, ax = plt.subplots(figsize=(6, 4.2))
    lrs = sorted({r.cfg.optim.lr for r in runs})
    top = max(r.series("loss").iloc[0] for r in runs) * 3
    for norm in NORMS:
        label, color = NORM_STYLE[norm]
        means, diverged = [], []
        for lr in lrs:
            finals = [outcome(r)[0] for r in select(runs, norm=norm, lr=lr)]
            ok = [f for f in finals if np.isfinite(f)]
            means.append(np.exp(np.mean(np.log(ok))) if ok else np.nan)
            if len(ok) < len(finals):
                diverged.append(lr)
            if ok:
                ax.plot([lr] * len(ok), ok, ".", color=color, alpha=0.5)
        ax.plot(lrs, means, "o-", color=color, label=label)
        if diverged:
            ax.plot(diverged, [top] * len(diverged), "x", color=color, ms=10, mew=2, label=f"{label}: diverged")
    ax.set_xscale("log"), ax.set_yscale("log"), ax.set_xlabel("Learning rate"), ax.set_ylabel("Final training loss")
    ax.set_title("Deep linear network: sensitivity to the learning rate"), ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def claims(runs):
    lrs = sorted({r.cfg.optim.lr for r in runs})
    working = {n: [lr for lr in lrs if all(outcome(r)[2] for r in select(runs, norm=n, lr=lr))] for n in NORMS}
    text = "; ".join(f"{NORM_STYLE[n][0]} trains at {len(working[n])}/{len(lrs)} lrs "
                     f"({', '.join(f'{lr:g}' for lr in working[n]) or 'none'})" for n in NORMS)
    text += "; final loss standard vs BN by lr: " + ", ".join(
        f"{lr:g}: {describe(select(runs, norm='none', lr=lr))} vs {describe(select(runs, norm='batch', lr=lr))}"
        for lr in lrs)
    finals = {n: {f"{lr:g}": [outcome(r)[0] for r in select(runs, norm=n, lr=lr)] for lr in lrs} for n in NORMS}
    return [Claim(claim=f"DLN: BatchNorm trains at a wider range of learning rates than standard (a run trains "
                        f"when it does not diverge and ends at or below {PROGRESS:g}x its initial loss)",
                  paper="sec 3.1 and Fig 11: BN robust to a broad range of learning rates",
                  measured=text, holds=len(working["batch"]) > len(working["none"]),
                  values={"working_lrs": working, "final_loss": finals})]
