"""Figure 8: how much the first two moments of sampled VGG activations (layers #2, #9, #13) move between
two successive training steps (|mu_{t+1} - mu_t|, |s2_{t+1} - s2_t|) and since the start (mu_t - mu_0,
s2_t - s2_0, signed), for standard, BatchNorm and noisy BatchNorm: drawn for one example unit, as the paper
does, and judged over every sampled unit. Claim 2 (moments part): noisy BN's activation moments move far
more than standard's, yet it trains (figure 2)."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bnlab import store
from experiments.lib.claims import Band, Quantity, all_of, by_seed, compare, judged, per_seed, seeds_of
from experiments.lib.plotting import NORM_STYLE, caption, steps_axis
from experiments.lib.runs import select

ORDER = 8  # its place in the paper: Figure 8

NORMS = ("none", "batch", "noisy_batch")
LAYERS = (2, 9, 13)
FAR_MORE = 2.0  # noisy BN / standard ratio of the median successive-step change
MEASURES = (("dmu", "|μ(t+1) − μ(t)|"), ("ds2", "|σ²(t+1) − σ²(t)|"), ("mu0", "μ(t) − μ(0)"),
            ("s20", "σ²(t) − σ²(0)"))


def moment_tables(run, layer) -> dict[str, pd.DataFrame]:
    """{"mu": steps x units, "s2": steps x units}: the mean and variance of each sampled unit at every step
    the activation probe recorded (probe steps and the steps after them)."""
    m = run.metrics[run.metrics.layer == layer]
    tags = store.split_metric(m.metric)
    out = {}
    for base, short in (("act_mean", "mu"), ("act_var", "s2")):
        sel = (tags.base == base).to_numpy()
        out[short] = m[sel].assign(unit=tags.unit[sel].to_numpy()).pivot_table(index="step", columns="unit",
                                                                               values="value")
    return out


def unit_changes(run, layer) -> dict[str, pd.DataFrame]:
    """Per probe step t and sampled unit: |mu(t+1) - mu(t)| and |s2(t+1) - s2(t)| ("dmu", "ds2"), and the
    signed shifts since the start mu(t) - mu(0) and s2(t) - s2(0) ("mu0", "s20")."""
    every = run.cfg.probes.every
    out = {}
    for short, table in moment_tables(run, layer).items():
        probe_steps = table.index[table.index % every == 0]
        following = probe_steps + 1
        present = following.isin(table.index)
        t, t1 = probe_steps[present], following[present]
        out[f"d{short}"] = pd.DataFrame(np.abs(table.loc[t1].to_numpy() - table.loc[t].to_numpy()), index=t,
                                        columns=table.columns)
        out[f"{short}0"] = table.loc[probe_steps] - table.iloc[0]
    return out


def moment_changes(run, layer) -> dict[str, pd.Series]:
    """Each measure per probe step, its absolute value averaged over the layer's sampled units."""
    return {k: v.abs().mean(1) for k, v in unit_changes(run, layer).items()}


def draw(runs, path):
    """As the paper's Fig 8: one example unit per layer (the first sampled unit of each network's first seed),
    linear axes; (a) changes between successive steps, (b) signed shifts since the start."""
    fig = plt.figure(figsize=(12, 12), layout="constrained")
    steps = runs[0].cfg.train.steps
    for subfig, part, keys in zip(fig.subfigures(2, 1, hspace=0.04), "ab", (MEASURES[:2], MEASURES[2:]), strict=True):
        axes = subfig.subplots(len(LAYERS), 2, sharex=True)
        for i, layer in enumerate(LAYERS):
            for norm in NORMS:
                label, color = NORM_STYLE[norm]
                run = by_seed(select(runs, norm=norm))[0]
                changes = unit_changes(run, layer)
                for j, (key, _) in enumerate(keys):
                    unit = changes[key].iloc[:, 0]
                    axes[i, j].plot(unit.index, unit.values, color=color, lw=1, label=label)
            axes[i, 0].set_ylabel(f"Layer #{layer}")
            for j in range(2):
                axes[i, j].axhline(0, color="k", lw=0.5)
        for j, (_, name) in enumerate(keys):
            axes[0, j].set_title(name)
            steps_axis(axes[-1, j], steps)
        subfig.suptitle(f"({part})", fontsize=11)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside upper center", ncol=len(NORMS), fontsize=9)
    fig.suptitle("VGG: moments of an example activation per layer (Fig 8)")
    caption(fig, f"One sampled unit per layer, seed {by_seed(runs)[0].cfg.seed}; the claim below uses every sampled "
                 "unit and every seed.")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


RATIO_BAND = Band(1.1)  # a ratio within 10% of FAR_MORE: a tie


def claims(runs):
    def median_change(run, key):
        return float(np.median(np.concatenate([moment_changes(run, layer)[key].to_numpy() for layer in LAYERS])))

    q = {f"{n}:{k}": per_seed(select(runs, norm=n), lambda r, k=k: median_change(r, k), geometric=True)
         for n in NORMS for k in ("dmu", "ds2")}
    ratio = {k: Quantity([a / b for a, b in zip(q[f"noisy_batch:{k}"].per_seed, q[f"none:{k}"].per_seed,
                                                  strict=True)], geometric=True) for k in ("dmu", "ds2")}
    text = "; ".join(f"median {name}: " + ", ".join(f"{NORM_STYLE[n][0]} {q[f'{n}:{k}'].text()}" for n in NORMS)
                     + f" (noisy / standard {ratio[k].text()})" for k, name in MEASURES[:2])
    return [judged("VGG: noisy BN's activation moments change far more between successive steps than standard's",
                   "Sec 2.1: 'the \"noisy\" BatchNorm network has qualitatively less stable distributions than even "
                   "the standard, non-BatchNorm network, yet it still performs better in terms of training' (Fig 8)",
                   f"the median over probe steps and layers #2, #9, #13 of |mu(t+1) - mu(t)| and of |s2(t+1) - s2(t)| "
                   f"(each averaged over the layer's sampled units) is more than {FAR_MORE:g}x standard's for noisy BN "
                   "(geometric mean over seeds)",
                   f"a ratio ties with {FAR_MORE:g} {RATIO_BAND.describe()}",
                   "Fig 8: noisy BN's mean and variance jump far more than standard's and BN's", text, q,
                   lambda v: all_of(*(compare(v[f"noisy_batch:{k}"], ">", FAR_MORE * v[f"none:{k}"], RATIO_BAND)
                                      for k in ("dmu", "ds2"))), seeds_of(runs))]
