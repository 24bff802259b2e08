"""Beyond the paper (Ghorbani, Krishnan and Xiao 2019): the Hessian's eigenvalue density by stochastic Lanczos
quadrature (bnlab.probes.hessian_spectrum, logged by the `spectrum` probe) early, mid-run and late, for VGG:
standard, BatchNorm with batch statistics (the function SGD optimizes), the same BatchNorm networks evaluated
with running statistics, and BatchNorm trained with its population statistics (norm=batch_population).

A row per arm, a column per measured step: the density (every seed; a logarithmic density over linear
eigenvalues, as Ghorbani et al. draw it); beside them the training accuracy and the claims' measure over steps.
The claims were written before the runs they judge were drawn.
"""

import matplotlib.pyplot as plt
import numpy as np

from bnlab.probes import spectral_density
from experiments.lib.claims import (
    Band,
    Quantity,
    Report,
    compare,
    final_train_accuracy,
    judged,
    per_seed,
    seeds_of,
)
from experiments.lib.plotting import caption, mean_band, steps_axis
from experiments.lib.runs import by_model, select, smoothed

ORDER = 22  # beyond the paper: after its figures, the curvature study and the theorems
BEYOND = True  # drawn by `bnlab-figure beyond` (make reproduce-beyond), not by `all`

# (norm name of the runs, probe mode) of each arm, its label and colour
ARMS = {
    "standard": ("none", "train", "Standard", "tab:red", "-"),
    "batch": ("batch", "train", "BatchNorm (batch statistics)", "tab:blue", "-"),
    "running": ("batch", "eval", "BatchNorm evaluated with running statistics", "tab:cyan", "--"),
    "population": ("batch_population", "train", "BatchNorm trained with population statistics", "tab:purple", "-"),
}
TRAINED = {"none": ("Standard", "tab:red"), "batch": ("BatchNorm", "tab:blue"),
           "batch_population": ("BatchNorm, population statistics", "tab:purple")}

BULK_MASS = 1e-3  # the bulk's edge: the |eigenvalue| below which all but this share of the quadrature's mass lies
ISOLATED = 2.0  # "large isolated eigenvalues": the top one at least twice the bulk's edge
RATIO_BAND = Band(1.1)  # two outlier ratios (or a ratio and ISOLATED) within 10% of each other: a tie
# The ratio's cap: a bulk edge below 1/CAP of the top eigenvalue is a bulk collapsed onto 0 (a network whose
# units have died), where the ratio would be float rounding divided by rounding.
CAP = 1000.0

MEASURE = (f"the outlier ratio of a measured spectrum: its largest Ritz value over the bulk's edge, the |Ritz value| "
           f"below which all but {BULK_MASS:g} of the quadrature's mass (its weights) lies (the nodes above it "
           f"stand for fewer than {BULK_MASS:g} x n of the n eigenvalues), capped at {CAP:g} (a bulk collapsed "
           "onto 0); per seed the geometric mean over the measured steps (early, mid-run, late), then the geometric "
           "mean over seeds")


def quadrature(run, mode: str, step: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The Ritz values and weights of the run's spectrum at `step` in `mode` (every Lanczos run's, the weights
    summing to 1 over all of them); None when the run did not measure it (it diverged before)."""
    table = run.tagged(f"spectrum_node_{mode}")
    if step not in table.index:
        return None
    nodes = table.loc[step].dropna()
    weights = run.tagged(f"spectrum_weight_{mode}").loc[step].reindex(nodes.index)
    return nodes.to_numpy(), weights.to_numpy() / weights.sum()


def bulk_edge(nodes: np.ndarray, weights: np.ndarray) -> float:
    """The |Ritz value| below which all but BULK_MASS of the quadrature's weight lies."""
    order = np.argsort(np.abs(nodes), kind="stable")
    size, cumulative = np.abs(nodes)[order], np.cumsum(weights[order])
    return float(size[min(np.searchsorted(cumulative, 1 - BULK_MASS - 1e-12), len(size) - 1)])


def outlier_ratio(nodes: np.ndarray, weights: np.ndarray) -> float:
    """The largest Ritz value over the bulk's edge, at most CAP (MEASURE); nan when no Ritz value is positive."""
    edge = bulk_edge(nodes, weights)
    top = float(nodes.max())
    return min(top / edge, CAP) if top > 0 and edge > 0 else (CAP if top > 0 else float("nan"))


def measured_steps(runs) -> list[int]:
    """Every step at which some run measured its spectrum (a diverged run stops measuring)."""
    return sorted({int(s) for r in runs for s in r.tagged("spectrum_node_train").index})


def _ratio_at(run, mode: str, step: int) -> float:
    measured = quadrature(run, mode, step)
    return float("nan") if measured is None else outlier_ratio(*measured)


def diverged_at(run) -> int | None:
    """The step a diverged run stopped at; None for a finished one."""
    return run.summary.get("diverged_at_step") if run.summary.get("status") == "diverged" else None


def _arm_runs(runs, arm: str):
    return select(runs, norm=ARMS[arm][0])


def arm_ratios(runs, arm: str) -> dict[int, Quantity]:
    """{step: Quantity over seeds of the outlier ratio} of one arm."""
    chosen, mode = _arm_runs(runs, arm), ARMS[arm][1]
    return {step: per_seed(chosen, lambda r, s=step: _ratio_at(r, mode, s), geometric=True)
            for step in measured_steps(runs)}


def arm_ratio(runs, arm: str) -> Quantity:
    """Per seed the geometric mean of the outlier ratio over the steps the run measured (MEASURE; a run that
    diverged, over those before it)."""
    chosen, mode = _arm_runs(runs, arm), ARMS[arm][1]

    def over_steps(run):
        ratios = [_ratio_at(run, mode, s) for s in measured_steps([run])]
        return float(np.exp(np.mean(np.log(ratios)))) if ratios and all(r > 0 for r in ratios) else float("nan")

    return per_seed(chosen, over_steps, geometric=True)


def _density_panel(ax, runs, arm: str, step: int) -> None:
    """One arm's density at one step, every seed: linear eigenvalues, a logarithmic density (Ghorbani et al.'s
    plots), the top Ritz value of each seed marked."""
    _, mode, _, color, style = ARMS[arm]
    top, gone = 0.0, []
    for i, run in enumerate(sorted(_arm_runs(runs, arm), key=lambda r: r.cfg.seed)):
        measured = quadrature(run, mode, step)
        if measured is None:
            gone.append(f"seed {run.cfg.seed} diverged at step {diverged_at(run)}")
            continue
        nodes, weights = measured
        grid, density, _ = spectral_density([nodes.tolist()], [weights.tolist()], grid_points=2000)
        ax.plot(grid.numpy(), density.numpy(), color=color, ls=style, lw=1.0, alpha=1.0 if i == 0 else 0.4,
                label=f"seed {run.cfg.seed}" if i == 0 else None)
        ax.axvline(nodes.max(), color=color, lw=0.8, alpha=0.6 if i == 0 else 0.3, ls=":")
        top = top or float(density.max())
    if gone:
        ax.text(0.02, 0.95, "\n".join(gone), transform=ax.transAxes, va="top", fontsize=7, color=color)
    # scaled to the first seed's density: a faint seed whose bulk collapsed onto 0 peaks far higher
    ax.set_yscale("log"), ax.set_ylim(1e-7, 10 * top if top else 1.0)


def _ratio_panel(ax, runs) -> None:
    """The claims' measure at each measured step: the outlier ratio of each arm (geometric mean over seeds and
    min-max)."""
    for arm, (_, _, label, color, style) in ARMS.items():
        ratios = arm_ratios(runs, arm)
        steps = list(ratios)
        ax.plot(steps, [q.mean for q in ratios.values()], color=color, ls=style, marker="o", label=label)
        if len(seeds_of(runs)) > 1:
            ax.fill_between(steps, [np.nanmin(q.per_seed) for q in ratios.values()],
                            [np.nanmax(q.per_seed) for q in ratios.values()], color=color, alpha=0.15, linewidth=0)
    ax.axhline(ISOLATED, color="0.4", lw=1, ls=":", label=f"isolated: {ISOLATED:g} x the bulk's edge")
    ax.set_yscale("log"), ax.set_ylabel("Top eigenvalue / bulk edge"), ax.set_xlabel("Steps")
    ax.legend(fontsize=7)


def draw(runs, path):
    runs = by_model(runs, "vgg")
    steps, total = measured_steps(runs), runs[0].cfg.train.steps
    fig = plt.figure(figsize=(5.0 * (len(steps) + 1), 2.9 * len(ARMS)), layout="constrained")
    grid = fig.add_gridspec(len(ARMS), len(steps) + 1)
    for row, arm in enumerate(ARMS):
        for col, step in enumerate(steps):
            ax = fig.add_subplot(grid[row, col])
            _density_panel(ax, runs, arm, step)
            if row == 0:
                ax.set_title(f"step {step} ({step / total:.0%} of the run)")
            if col == 0:
                ax.set_ylabel(f"{ARMS[arm][2]}\ndensity (log)", fontsize=8)
                ax.legend(fontsize=7, loc="upper right")
            if row == len(ARMS) - 1:
                ax.set_xlabel("Eigenvalue")
    accuracy = fig.add_subplot(grid[: len(ARMS) // 2, -1])
    for norm, (label, color) in TRAINED.items():
        mean_band(accuracy, [smoothed(r.series("accuracy"), total) for r in select(runs, norm=norm)], label, color)
    accuracy.set_ylabel("Train accuracy (%)"), steps_axis(accuracy, total), accuracy.legend(fontsize=7)
    accuracy.set_title("Training")
    _ratio_panel(fig.add_subplot(grid[len(ARMS) // 2:, -1]), runs)
    fig.suptitle(f"VGG: the Hessian's eigenvalue density on the step's minibatch (SLQ, "
                 f"{runs[0].cfg.probes.spectrum.iterations} Lanczos steps), lr {runs[0].cfg.optim.lr:g}")
    n = len(seeds_of(runs))
    caption(fig, f"Densities: each Ritz value spread by a Gaussian of 1% of its spectrum's range; seed "
                 f"{seeds_of(runs)[0]} opaque, the others faint; dotted: each seed's top eigenvalue. Training: the "
                 f"mean over {n} seeds, min-max shaded. Ratio: {MEASURE.split(': ', 1)[1].split(';')[0]}.")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


APPEAR = ("Ghorbani et al. 2019 (abstract): 'In non-batch normalized networks, we observe the rapid appearance of "
          "large isolated eigenvalues in the spectrum'")
ABSENT = ("Ghorbani et al. 2019 (abstract): 'In a batch normalized network, these two effects are almost absent.'")
RETURN = ("Ghorbani et al. 2019, as issue 29 summarizes it (the paper's own sentence could not be retrieved here): "
          "the outliers come back 'when BN uses population statistics during training'")
BAND_TEXT = f"two outlier ratios, or a ratio and {ISOLATED:g}, tie {RATIO_BAND.describe()}"


def _by_step(ratios: dict[int, Quantity]) -> str:
    return ", ".join(f"step {s}: {q.text()}" for s, q in ratios.items())


def claims(runs):
    runs = by_model(runs, "vgg")
    seeds = seeds_of(runs)
    ratio = {arm: arm_ratio(runs, arm) for arm in ("standard", "batch", "population")}
    steps = {arm: arm_ratios(runs, arm) for arm in ("standard", "batch", "population")}
    return [
        judged("VGG: without BatchNorm the Hessian has large isolated eigenvalues", APPEAR,
               f"{MEASURE}: standard's above {ISOLATED:g}", BAND_TEXT,
               "Ghorbani et al.: outliers far from the bulk within the first few hundred steps (ResNet-32, VGG)",
               f"outlier ratio standard {ratio['standard'].text()} ({_by_step(steps['standard'])})",
               {"standard": ratio["standard"]}, lambda v: compare(v["standard"], ">", ISOLATED, RATIO_BAND), seeds),
        judged("VGG: BatchNorm (batch statistics) suppresses the outliers", ABSENT,
               f"{MEASURE}: BatchNorm's below standard's", BAND_TEXT,
               "Ghorbani et al.: with BatchNorm no isolated eigenvalues",
               f"outlier ratio BatchNorm {ratio['batch'].text()} ({_by_step(steps['batch'])}), standard "
               f"{ratio['standard'].text()}", {"batch": ratio["batch"], "standard": ratio["standard"]},
               lambda v: compare(v["batch"], "<", v["standard"], RATIO_BAND), seeds),
        judged("VGG: BatchNorm trained with population statistics has the outliers back", RETURN,
               f"{MEASURE}: population-statistics BatchNorm's above batch-statistics BatchNorm's", BAND_TEXT,
               "Ghorbani et al.: the outliers return, and training is much slower",
               f"outlier ratio population statistics {ratio['population'].text()} "
               f"({_by_step(steps['population'])}), batch statistics {ratio['batch'].text()}",
               {"population": ratio["population"], "batch": ratio["batch"]},
               lambda v: compare(v["population"], ">", v["batch"], RATIO_BAND), seeds),
    ]


def isolated_count(run, mode: str, step: int) -> float:
    """How many eigenvalues the Ritz values above ISOLATED x the bulk's edge stand for: n x their weight (n the
    model's parameters); nan where the run did not measure the step."""
    from bnlab.models import build_model

    measured = quadrature(run, mode, step)
    if measured is None:
        return float("nan")
    nodes, weights = measured
    n = sum(p.numel() for p in build_model(run.cfg).parameters())
    return float(n * weights[nodes > ISOLATED * bulk_edge(nodes, weights)].sum())


def _diverged_text(diverged: list[tuple[int, int]]) -> str:
    return f" (diverged: {', '.join(f'seed {s} at step {t}' for s, t in diverged)})" if diverged else ""


def reports(runs):
    runs = by_model(runs, "vgg")
    running, batch = arm_ratio(runs, "running"), arm_ratio(runs, "batch")
    accuracy = {n: per_seed(select(runs, norm=n), final_train_accuracy) for n in TRAINED}
    diverged = {n: [(r.cfg.seed, diverged_at(r)) for r in select(runs, norm=n) if diverged_at(r) is not None]
                for n in TRAINED}
    counts = {arm: {step: per_seed(_arm_runs(runs, arm), lambda r, s=step, m=ARMS[arm][1]: isolated_count(r, m, s))
                    for step in measured_steps(runs)} for arm in ARMS}
    return [
        Report("VGG: how many eigenvalues lie above the isolation threshold (n x the weight of the Ritz values above "
               f"{ISOLATED:g} x the bulk's edge; mean over seeds)",
               "added after the first smoke runs were seen, to show what the outlier ratio cannot (whether a few "
               "eigenvalues or a heavy tail lie above the edge): reported, not judged. Ghorbani et al.'s outliers "
               "number about as many as the classes (10); one Lanczos run's weights are noisy",
               "; ".join(f"{ARMS[arm][2]}: " + ", ".join(f"step {s} {q.text()}" for s, q in by_step.items())
                         for arm, by_step in counts.items()),
               {arm: {str(s): q.as_json() for s, q in by_step.items()} for arm, by_step in counts.items()}),
        Report("VGG: outlier ratio of the BatchNorm networks evaluated with running statistics",
               "Ghorbani et al.'s statement is about training with population statistics; this is the same "
               "networks' eval-mode Hessian (what PyHessian measures), reported beside it",
               f"running statistics {running.text()} ({_by_step(arm_ratios(runs, 'running'))}), batch statistics "
               f"{batch.text()}", {"running": running.as_json(), "batch": batch.as_json()}),
        Report("VGG: final training accuracy of each arm (%; a diverged run has none)",
               "Ghorbani et al. report that training with population statistics is much slower; not a claim here",
               ", ".join(f"{TRAINED[n][0]} {q.text()}{_diverged_text(diverged[n])}" for n, q in accuracy.items()),
               {n: {**q.as_json(), "diverged": diverged[n]} for n, q in accuracy.items()}),
    ]
