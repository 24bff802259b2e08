"""Figure 8: how much the first two moments of sampled VGG activations (layers #2, #9, #13) move between
two successive training steps (|mu_{t+1} - mu_t|, |s2_{t+1} - s2_t|) and since the start (|mu_t - mu_0|,
|s2_t - s2_0|), averaged over the sampled units, for standard, BatchNorm and noisy BatchNorm. Claim 2
(moments part): noisy BN's activation moments move far more than standard's, yet it trains (figure 2)."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bnlab import store
from experiments.common import NORM_STYLE, Claim, mean_band, select, spread, steps_axis

NORMS = ("none", "batch", "noisy_batch")
LAYERS = (2, 9, 13)
FAR_MORE = 2.0  # noisy BN / standard ratio of the median successive-step change
MEASURES = (("dmu", "|μ(t+1) − μ(t)|"), ("ds2", "|σ²(t+1) − σ²(t)|"), ("mu0", "|μ(t) − μ(0)|"),
            ("s20", "|σ²(t) − σ²(0)|"))


def moment_changes(run, layer) -> dict[str, pd.Series]:
    """Each measure per probe step, averaged over the layer's sampled units."""
    m = run.metrics[run.metrics.layer == layer]
    tags = store.split_metric(m.metric)
    every = run.cfg.probes.every
    out = {}
    for base, short in (("act_mean", "mu"), ("act_var", "s2")):
        sel = (tags.base == base).to_numpy()
        table = m[sel].assign(unit=tags.unit[sel].to_numpy()).pivot_table(index="step", columns="unit", values="value")
        probe_steps = table.index[table.index % every == 0]
        following = probe_steps + 1
        present = following.isin(table.index)
        t, t1 = probe_steps[present], following[present]
        out[f"d{short}"] = pd.Series(np.abs(table.loc[t1].to_numpy() - table.loc[t].to_numpy()).mean(1), index=t)
        out[f"{short}0"] = (table.loc[probe_steps] - table.iloc[0]).abs().mean(1)
    return out


def draw(runs, path):
    fig, axes = plt.subplots(len(MEASURES), len(LAYERS), figsize=(4.4 * len(LAYERS), 2.9 * len(MEASURES)))
    for j, layer in enumerate(LAYERS):
        for norm in NORMS:
            label, color = NORM_STYLE[norm]
            changes = [moment_changes(r, layer) for r in select(runs, norm=norm)]
            for i, (key, name) in enumerate(MEASURES):
                mean_band(axes[i, j], [c[key] for c in changes], label, color, log=True)
                axes[i, j].set_yscale("log"), axes[i, j].set_ylabel(name)
        axes[0, j].set_title(f"Layer #{layer}")
        for i in range(len(MEASURES)):
            steps_axis(axes[i, j], runs[0].cfg.train.steps)
    fig.suptitle("VGG: changes of activation moments (mean over sampled units)")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper center", ncol=len(NORMS), fontsize=9,
               bbox_to_anchor=(0.5, 0.975))
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def claims(runs):
    def median_change(norm, key):
        return [float(np.median(np.concatenate([moment_changes(r, layer)[key].to_numpy() for layer in LAYERS])))
                for r in select(runs, norm=norm)]

    values = {n: {k: median_change(n, k) for k in ("dmu", "ds2")} for n in NORMS}
    ratio = {k: np.mean(values["noisy_batch"][k]) / np.mean(values["none"][k]) for k in ("dmu", "ds2")}
    text = "; ".join(f"median {name}: " + ", ".join(f"{NORM_STYLE[n][0]} {spread(values[n][k])}" for n in NORMS)
                     + f" (noisy / standard {ratio[k]:.3g})" for k, name in MEASURES[:2])
    return [Claim(claim=f"VGG: noisy BN's activation moments change far more between successive steps than standard's "
                        f"(median over steps, units and layers #2, #9, #13 at least {FAR_MORE:g}x standard's)",
                  paper="Fig 8: noisy BN's mean and variance jump far more than standard's and BN's",
                  measured=text, holds=bool(all(r >= FAR_MORE for r in ratio.values())), values=values)]
