"""The paper's claims as we judge them: each measured in every seed, its rule applied to every seed and to the
mean over seeds, with a tie band, into one of three verdicts.

A rule turns one set of values (one seed's, or the means over seeds) into an outcome: HOLDS, FAILS, or TIE
when a margin it compares lies inside the rule's tie band. The verdict over seeds (`verdict`):
- holds: the rule holds on the mean and in every seed (with 5 or more seeds, in all but one);
- fails: it fails on the mean and in most seeds;
- undecided: otherwise (the seeds disagree, or the mean's margin lies inside the tie band).

Every value is a Quantity: its per-seed values, and its mean on the scale the rule uses (geometric for
positive values that span orders of magnitude, such as losses, landscape measures and eigenvalues;
arithmetic for accuracies, cosines and shares), printed with its spread over seeds: min-max for fewer than 5
seeds, a 90% bootstrap interval of the mean for 5 or more.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from experiments.lib.runs import Run, smoothed

HOLDS, FAILS, TIE = "holds", "fails", "tie"  # a rule's outcome on one set of values
UNDECIDED = "undecided"  # the verdict when the seeds disagree or the margin lies inside the tie band
VERDICTS = (HOLDS, FAILS, UNDECIDED)
BOOTSTRAP_FROM = 5  # seeds from which the spread is a bootstrap interval (and one dissenting seed is allowed)
BOOTSTRAP_SAMPLES = 10_000


# ---------------------------------------------------------------------------------------------- tie bands


@dataclass(frozen=True)
class Band:
    """A rule's tie band around a threshold: values within a factor `width` of it (ratio=True: the zone
    [t / width, t x width]) or within `width` of it (ratio=False: [t - width, t + width]) are a tie."""

    width: float
    ratio: bool = True

    def __post_init__(self):
        if self.ratio and not self.width >= 1 or not self.ratio and not self.width >= 0:
            raise ValueError(f"a tie band's width must be >= 1 (ratio) or >= 0 (difference), got {self.width}")

    def zone(self, threshold: float) -> tuple[float, float]:
        if self.ratio:
            return (threshold / self.width, threshold * self.width) if threshold >= 0 else \
                (threshold * self.width, threshold / self.width)
        return threshold - self.width, threshold + self.width

    def describe(self) -> str:
        if self.ratio:
            return f"within a factor {self.width:g} of it ([{1 / self.width:.3g}, {self.width:g}] x)"
        return f"within ±{self.width:g} of it"


def compare(value: float, op: str, threshold: float, band: Band) -> str:
    """Whether `value op threshold` (op "<" or ">") holds, clearly (HOLDS), clearly not (FAILS), or inside the
    tie band around the threshold (TIE). A value that is not a number cannot be judged: TIE."""
    if op not in ("<", ">"):
        raise ValueError(f"op must be '<' or '>', got {op!r}")
    if math.isnan(value) or math.isnan(threshold):
        return TIE
    low, high = band.zone(threshold)
    if value < low:
        return HOLDS if op == "<" else FAILS
    if value > high:
        return FAILS if op == "<" else HOLDS
    return TIE


def all_of(*outcomes: str) -> str:
    """Every part must hold: FAILS if any fails, TIE if none fails and any ties, HOLDS otherwise."""
    if FAILS in outcomes:
        return FAILS
    return TIE if TIE in outcomes else HOLDS


def some_and_none_against(*outcomes: str) -> str:
    """A measure that improves when no part speaks against it and at least one for it: FAILS if any fails,
    HOLDS if at least one holds (the others tie), TIE if all tie."""
    if FAILS in outcomes:
        return FAILS
    return HOLDS if HOLDS in outcomes else TIE


def verdict(seed_outcomes: list[str], mean_outcome: str) -> str:
    """Three-valued verdict over seeds (module docstring)."""
    n = len(seed_outcomes)
    dissent = 1 if n >= BOOTSTRAP_FROM else 0
    if mean_outcome == HOLDS and sum(o != HOLDS for o in seed_outcomes) <= dissent:
        return HOLDS
    if mean_outcome == FAILS and sum(o == FAILS for o in seed_outcomes) > n / 2:
        return FAILS
    return UNDECIDED


# ---------------------------------------------------------------------------------------------- quantities


@dataclass
class Quantity:
    """One measured value in every seed (in seed order), averaged on the scale its rule uses."""

    per_seed: list[float]
    geometric: bool = False

    def __post_init__(self):
        self.per_seed = [float(v) for v in self.per_seed]
        if not self.per_seed:
            raise ValueError("a quantity needs a value for at least one seed")

    @property
    def mean(self) -> float:
        return _mean(np.asarray(self.per_seed), self.geometric)

    @property
    def interval(self) -> tuple[float, float]:
        """min-max over seeds (fewer than BOOTSTRAP_FROM), else the 90% bootstrap interval of the mean."""
        v = np.asarray(self.per_seed)
        if np.isnan(v).all():  # never measured (a level never reached, say)
            return math.nan, math.nan
        if len(v) < BOOTSTRAP_FROM:
            return float(np.nanmin(v)), float(np.nanmax(v))
        rng = np.random.default_rng(0)  # fixed: the same runs always print the same interval
        resampled = v[rng.integers(0, len(v), size=(BOOTSTRAP_SAMPLES, len(v)))]
        means = _mean(resampled, self.geometric, axis=1)
        # the inverted CDF: no interpolation between resampled means (an infinite one would make it nan)
        return (float(np.nanquantile(means, 0.05, method="inverted_cdf")),
                float(np.nanquantile(means, 0.95, method="inverted_cdf")))

    def text(self, digits: int = 3, unit: str = "", missing: str = "n/a") -> str:
        """'mean [low, high]' (one seed: its value; `missing` when no seed has a value)."""
        if np.isnan(self.per_seed).all():
            return missing
        if len(self.per_seed) == 1:
            return f"{_fmt(self.mean, digits)}{unit}"
        low, high = self.interval
        return f"{_fmt(self.mean, digits)}{unit} [{_fmt(low, digits)}, {_fmt(high, digits)}]"

    def as_json(self) -> dict:
        low, high = self.interval
        return {"mean": self.mean, "interval": [low, high], "scale": "geometric" if self.geometric else "arithmetic",
                "per_seed": self.per_seed}


def _mean(v: np.ndarray, geometric: bool, axis=None):
    """The mean of the seeds that have a value (a seed without one judges as a tie, so it dissents)."""
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # every value missing: nan, said by the caller
        if geometric:
            return np.exp(np.nanmean(np.log(np.maximum(v, 1e-300)), axis=axis))
        return np.nanmean(v, axis=axis)


def _fmt(x: float, digits: int) -> str:
    return f"{x:.{digits}g}"


def spread_label(seeds: int) -> str:
    """What the interval beside a mean is, for table headers and figure legends."""
    if seeds == 1:
        return "one seed"
    return f"min-max over {seeds} seeds" if seeds < BOOTSTRAP_FROM else f"90% bootstrap interval over {seeds} seeds"


# ---------------------------------------------------------------------------------------------- claims


@dataclass
class Claim:
    """One of the paper's claims as we judge it. `quote`, `rule` and `tie_band` are fixed in the figure's module,
    written before the runs they judge were seen; the rest comes from the runs."""

    claim: str  # what the paper says, one sentence
    quote: str  # the paper's sentence (or the figure) that the claim tests
    rule: str  # how it is judged, with its thresholds
    tie_band: str  # which margins count as a tie
    paper: str  # the paper's value or picture
    measured: str  # what we measured: means with their spread over seeds
    verdict: str  # holds | fails | undecided
    outcomes: dict = field(default_factory=dict)  # {"mean": outcome, "seeds": {seed: outcome}}
    values: dict = field(default_factory=dict)  # every quantity: mean, interval, scale, per-seed values


def judge(quantities: dict[str, Quantity], rule: Callable[[dict[str, float]], str],
          seeds: list[int]) -> tuple[str, dict]:
    """Apply `rule` (a function of {name: value}) to each seed's values and to the means: (verdict, outcomes)."""
    for name, q in quantities.items():
        if len(q.per_seed) != len(seeds):
            raise ValueError(f"quantity {name!r} has {len(q.per_seed)} values for {len(seeds)} seeds")
    per_seed = {seed: rule({k: q.per_seed[i] for k, q in quantities.items()}) for i, seed in enumerate(seeds)}
    mean = rule({k: q.mean for k, q in quantities.items()})
    return verdict(list(per_seed.values()), mean), {"mean": mean, "seeds": per_seed}


def judged(claim: str, quote: str, rule: str, band: str, paper: str, measured: str,
           quantities: dict[str, Quantity], decide: Callable[[dict[str, float]], str], seeds: list[int]) -> Claim:
    """A Claim from its fixed texts and its measured quantities, judged by `decide`."""
    result, outcomes = judge(quantities, decide, seeds)
    return Claim(claim=claim, quote=quote, rule=rule, tie_band=band, paper=paper, measured=measured, verdict=result,
                 outcomes=outcomes, values={k: q.as_json() for k, q in quantities.items()})


@dataclass
class Report:
    """A measurement a figure reports beside its claims but does not judge (the paper's statement does not
    apply to it, or there is nothing to compare it with)."""

    what: str
    why: str  # why it is reported, not judged
    measured: str
    values: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- runs by seed


def seeds_of(runs: list[Run]) -> list[int]:
    """The seeds the runs cover, in order."""
    return sorted({r.cfg.seed for r in runs})


def by_seed(runs: list[Run]) -> list[Run]:
    """The runs in seed order (one configuration's runs: one per seed)."""
    return sorted(runs, key=lambda r: r.cfg.seed)


def per_seed(runs: list[Run], measure: Callable[[Run], float], geometric: bool = False) -> Quantity:
    """A Quantity of `measure` applied to one configuration's run of each seed."""
    return Quantity([measure(r) for r in by_seed(runs)], geometric)


# ---------------------------------------------------------------------------------------------- training speed


def final_train_accuracy(run: Run) -> float:
    """Training accuracy at the end: the mean batch accuracy over the last 2% of the steps (nan if diverged)."""
    if run.summary.get("status") != "finished":
        return float("nan")
    return float(smoothed(run.series("accuracy"), run.cfg.train.steps).iloc[-1])


# Training speed is judged early, where the paper's curves separate: accuracy saturates near 100% by the
# end of a paper-scale run, so a final accuracy says little about speed.
EARLY_CHECKPOINTS = (0.05, 0.1, 0.2)  # fractions of the run: steps 750, 1500, 3000 of the paper's 15,000
# Accuracy points within which two training accuracies tie: about twice the binomial noise of a smoke window
# (10 batches of 128: 1.3 points at 30%); a paper-scale window (300 batches) is 6x less noisy.
ACCURACY_BAND = Band(2.0, ratio=False)


def accuracy_at(run: Run, fraction: float) -> float:
    """Training accuracy at `fraction` of the run: the mean batch accuracy over the 2% of the steps ending
    there (chance, 10%, if the run diverged before: a diverged run has not trained)."""
    steps = run.cfg.train.steps
    end = int(round(fraction * steps))
    acc = run.series("accuracy")
    window = acc[(acc.index < end) & (acc.index >= end - max(1, steps // 50))]
    return float(window.mean()) if len(window) and np.isfinite(window).all() else 10.0


def checkpoint_accuracies(runs: list[Run]) -> dict[str, Quantity]:
    """{"5%": Quantity of the accuracy at 5% of the run, ...} at EARLY_CHECKPOINTS, over one configuration's
    seeds."""
    return {f"{f:.0%}": per_seed(runs, lambda r, f=f: accuracy_at(r, f)) for f in EARLY_CHECKPOINTS}


def steps_to_reach(run: Run, level: float) -> float:
    """First step at which the smoothed training accuracy reaches `level` (nan if never)."""
    acc = smoothed(run.series("accuracy"), run.cfg.train.steps)
    reached = acc[acc >= level]
    return float(reached.index[0]) if len(reached) else float("nan")
