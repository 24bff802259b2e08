"""Beyond the paper (Lubana et al. 2021; Kohler et al. 2019): does the smoothing belong to BatchNorm, or to
normalization in general? For VGG and the DLN: training, then the landscape measures of figures 4 and 10 (loss
range, gradient predictiveness, effective beta) for LayerNorm, GroupNorm, WeightNorm and (VGG only: the DLN has
no nonlinearity) BatchNorm after the ReLU, against standard and BatchNorm.

The claims are the paper's section 3.3 rule for the l_p normalizations (figures 12 and 13; committed before
these runs), applied to normalizers the paper did not test: each against standard over the whole run.
"""

import matplotlib.pyplot as plt

from experiments.lib.claims import Quantity, Report, final_train_accuracy, per_seed
from experiments.lib.landscape import draw_landscape_panels, every_norm_claims, landscape_caption, measure_quantities
from experiments.lib.plotting import NORM_STYLE, accuracy_panel, caption, loss_panel, norm_linestyle
from experiments.lib.runs import classifies, each_model, norm_name, select

ORDER = 23  # beyond the paper: after its figures, the curvature study, the theorems and the spectrum
BEYOND = True  # drawn by `bnlab-figure beyond` (make reproduce-beyond), not by `all`

REFERENCES = ("none", "batch")
QUOTE = ("Sec 3.3: 'all these techniques result in an improved smoothness of the landscape that is similar to the "
         "effect of BatchNorm' (said of the l_p normalizations; asked here of normalizers the paper did not test)")


def norms_of(runs) -> list[str]:
    """The normalizations a model's runs have, standard and BatchNorm first, then in the sweep's order."""
    seen = list(dict.fromkeys(norm_name(r.cfg) for r in runs))
    return [n for n in REFERENCES if n in seen] + [n for n in seen if n not in REFERENCES]


def draw(runs, path):
    models = each_model(runs)
    fig, axes = plt.subplots(len(models), 4, figsize=(20, 4.4 * len(models)), squeeze=False, layout="constrained")
    for row, (name, chosen) in zip(axes, models, strict=True):
        norms = norms_of(chosen)
        if classifies(chosen[0]):
            accuracy_panel(row[0], chosen, norms, styles={n: norm_linestyle(n) for n in norms})
        else:
            loss_panel(row[0], chosen, norms)
        draw_landscape_panels(list(row[1:]), chosen, norms)
        for ax in row:
            ax.legend().remove()
        for ax, letter in zip(row, "abcd", strict=True):
            ax.set_title(f"{name} ({letter}), lr {chosen[0].cfg.optim.lr:g}")
        handles, labels = row[0].get_legend_handles_labels()
        row[0].legend(handles, labels, fontsize=7)
    fig.suptitle("Other normalizers: training and the loss landscape along the gradient (figures 4 and 10's "
                 "measures)")
    caption(fig, landscape_caption(runs, "Training and β-smoothness"))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def claims(runs):
    out = []
    for name, chosen in each_model(runs):
        others = [n for n in norms_of(chosen) if n not in REFERENCES]
        out += every_norm_claims(chosen, others, name, QUOTE,
                                 "not in the paper (Lubana et al. 2021 compare these normalizers; the landscape "
                                 "measures are the paper's)")
    return out


def _training(chosen, norm: str) -> Quantity:
    """Final training accuracy (VGG) or the final training loss (the DLN: a regression), over seeds."""
    runs = select(chosen, norm=norm)
    if classifies(runs[0]):
        return per_seed(runs, final_train_accuracy)
    def final_loss(run):  # a diverged run has none (its finite losses before it would read as a final one)
        if run.summary.get("status") != "finished":
            return float("nan")
        return float(run.series("loss").iloc[-max(1, run.cfg.train.steps // 50):].mean())

    return per_seed(runs, final_loss, geometric=True)


def reports(runs):
    """The summary table: for each model and normalizer, where training ends and the raw peaks of the three
    landscape measures over the whole run (geometric means over seeds; the claims' rule also reads the 90%
    quantile, and raises beta to its plateau first)."""
    out = []
    for name, chosen in each_model(runs):
        rows, values = [], {}
        what = "final train accuracy (%)" if classifies(chosen[0]) else "final training loss"
        for norm in norms_of(chosen):
            q = measure_quantities(chosen, norm, early=False)
            training = _training(chosen, norm)
            peaks = {m: q[f"{norm}:{m}_peak"] for m in ("loss_range", "grad_pred", "beta")}
            rows.append(f"{NORM_STYLE[norm][0]}: {what} {training.text()}; peaks: loss range "
                        f"{peaks['loss_range'].text()}, gradient predictiveness {peaks['grad_pred'].text()}, "
                        f"effective beta {peaks['beta'].text()}")
            values[norm] = {"training": training.as_json(), **{m: p.as_json() for m, p in peaks.items()}}
        out.append(Report(f"{name}: every normalizer at a glance", "the summary table; the verdicts are the claims "
                          "above", "; ".join(rows), values))
    return out
