"""The paper's claims as measured: the Claim record, and the measurements claims share (accuracy at a
point of the run, steps to reach a level, spreads over seeds)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from experiments.lib.runs import Run, smoothed


def final_train_accuracy(run: Run) -> float:
    """Training accuracy at the end: the mean batch accuracy over the last 2% of the steps (nan if diverged)."""
    if run.summary.get("status") != "finished":
        return float("nan")
    return float(smoothed(run.series("accuracy"), run.cfg.train.steps).iloc[-1])


@dataclass
class Claim:
    """One of the paper's claims as we judge it. `quote` and `rule` are fixed in the figure's module, written
    before the runs they judge were seen; `measured` and `holds` come from the runs."""

    claim: str  # what the paper says, one sentence
    quote: str  # the paper's sentence (or the figure) that the claim tests
    rule: str  # how it is judged, with its thresholds
    paper: str  # the paper's value or picture
    measured: str  # what we measured, with numbers
    holds: bool
    values: dict = field(default_factory=dict)  # the numbers behind `measured`, for claims.json


# Training speed is judged early, where the paper's curves separate: accuracy saturates near 100% by the
# end of a paper-scale run, so a final accuracy says little about speed.
EARLY_CHECKPOINTS = (0.05, 0.1, 0.2)  # fractions of the run: steps 750, 1500, 3000 of the paper's 15,000


def accuracy_at(run: Run, fraction: float) -> float:
    """Training accuracy at `fraction` of the run: the mean batch accuracy over the 2% of the steps ending
    there (nan if the run diverged before)."""
    steps = run.cfg.train.steps
    end = int(round(fraction * steps))
    acc = run.series("accuracy")
    window = acc[(acc.index < end) & (acc.index >= end - max(1, steps // 50))]
    return float(window.mean()) if len(window) else float("nan")


def checkpoint_accuracies(runs: list[Run]) -> dict[str, list[float]]:
    """{"5%": [accuracy of each run at 5% of the run], ...} at EARLY_CHECKPOINTS."""
    return {f"{f:.0%}": [accuracy_at(r, f) for r in runs] for f in EARLY_CHECKPOINTS}


def steps_to_reach(run: Run, level: float) -> float:
    """First step at which the smoothed training accuracy reaches `level` (nan if never)."""
    acc = smoothed(run.series("accuracy"), run.cfg.train.steps)
    reached = acc[acc >= level]
    return float(reached.index[0]) if len(reached) else float("nan")


def spread(values) -> str:
    """'mean (min-max over seeds)' in 3 significant digits."""
    v = np.asarray(list(values), dtype=float)
    if len(v) == 1:
        return f"{v[0]:.3g}"
    return f"{np.nanmean(v):.3g} ({np.nanmin(v):.3g}-{np.nanmax(v):.3g})"


def geomean(values) -> float:
    """Geometric mean (of positive values spanning orders of magnitude; an infinite one gives inf)."""
    v = np.asarray(list(values), dtype=float)
    return float(np.exp(np.mean(np.log(np.maximum(v, 1e-300)))))
