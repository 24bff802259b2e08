"""Section 4: the standard deviation sigma_j of each BatchNorm layer's input (before normalization) over
training, and the factor gamma_j / sigma_j by which Theorem 4.1 scales the gradient, for VGG and the DLN:
medians over each layer's units, one line per layer. The paper notes that sigma_j "tends to be large and
highly uncontrolled" (pointing to the DLN's Appendix Figure 9), so that the scaling by gamma / sigma may
contribute to the flatness it measures."""

import matplotlib.pyplot as plt
import numpy as np

from experiments.lib.claims import Band, by_seed, compare, judged, per_seed, seeds_of
from experiments.lib.plotting import caption, steps_axis
from experiments.lib.runs import by_model, models_in, select

ORDER = 15  # its place in the paper: after the figures, section 4

PANELS = (("bn_sigma_median", "σ_j (median over units)"), ("bn_gain_median", "γ_j / σ_j (median over units)"))


def layer_table(run, stat):
    m = run.metrics[run.metrics.metric == stat]
    return m.pivot_table(index="step", columns="layer", values="value")


def draw(runs, path):
    models = models_in(runs)
    fig, axes = plt.subplots(len(models), len(PANELS), figsize=(12, 3.9 * len(models)), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for row, model in zip(axes, models, strict=True):
        run = by_seed(select(by_model(runs, model), norm="batch"))[0]
        for ax, (stat, label) in zip(row, PANELS, strict=True):
            table = layer_table(run, stat)
            for k, layer in enumerate(table.columns):
                ax.plot(table.index, table[layer], color=cmap(k / max(1, len(table.columns) - 1)), lw=1,
                        label=f"#{layer}")
            ax.axhline(1, color="0.5", ls="--", lw=0.8, zorder=1)  # under the layers' lines, which sit near 1
            ax.set_yscale("log"), ax.set_ylabel(label)
            ax.set_title(f"{model.upper()} + BatchNorm, lr {run.cfg.optim.lr:g} (seed {run.cfg.seed})", fontsize=10)
            steps_axis(ax, run.cfg.train.steps)
        row[-1].legend(fontsize=6, ncol=2 if model == "vgg" else 4, title="layer", title_fontsize=7,
                       loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("BatchNorm's pre-normalization scale (section 4, Theorem 4.1's factor γ / σ)")
    fig.tight_layout()
    caption(fig, "One line per BatchNorm layer, one seed; the claims below use every seed.")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def late_median(run, stat) -> float:
    """Median over layers and over the probe steps of the second half of the run."""
    table = layer_table(run, stat)
    return float(np.median(table[table.index >= run.cfg.train.steps / 2].to_numpy()))


RATIO_BAND = Band(1.05)  # a median ratio within 5% of 1: a tie


def claims(runs):
    out = []
    for model in models_in(runs):
        chosen = select(by_model(runs, model), norm="batch")
        if not chosen:
            continue
        gain = per_seed(chosen, lambda r: late_median(r, "bn_gain_median"), geometric=True)
        sigma = per_seed(chosen, lambda r: late_median(r, "bn_sigma_median"), geometric=True)
        first = per_seed(chosen, lambda r: float(np.median(layer_table(r, "bn_sigma_median").iloc[0])), geometric=True)
        layer_spread = per_seed(chosen, lambda r: float((lambda t: t.max() / t.min())(
            layer_table(r, "bn_sigma_median").iloc[-1])), geometric=True)
        out.append(judged(
            f"{model.upper()}: BatchNorm's rescaling gamma / sigma_j shrinks the gradient (sigma_j is large)",
            "Sec 4.1: 'we note that σj tends to be large and highly uncontrolled in practice (cf. Appendix Figure 9), "
            "and thus the scaling by γ/σ may contribute to the relative \"flatness\" we see in the effective "
            "Lipschitz constant.'",
            "median over BN layers and over the probe steps of the second half of the run of each layer's median "
            "gamma_j / sigma_j, geometric mean over seeds: below 1; sigma_j and its spread over layers reported",
            f"a ratio ties with 1 {RATIO_BAND.describe()}", "sigma_j 'large and highly uncontrolled'",
            f"gamma / sigma_j {gain.text()}; sigma_j at the first probe step {first.text()}, over the second half "
            f"{sigma.text()}; largest / smallest layer median at the end {layer_spread.text()}",
            {"gain": gain, "sigma_late": sigma, "sigma_first": first, "layer_spread": layer_spread},
            lambda v: compare(v["gain"], "<", 1.0, RATIO_BAND), seeds_of(chosen)))
    return out
