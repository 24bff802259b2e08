"""Section 4, measured: both sides of Theorems 4.1 and 4.2 for every BatchNorm layer (bnlab.probes.theorems),
at steps over training, for VGG and the DLN.

Row per model, x the BatchNorm layer (numbered by the conv/linear layer it follows): (a) the share of units
where each inequality holds (4.1 as printed, with 1/sqrt(m); 4.1 with the 1/m the proof gives; 4.2), mean
over measured steps with the lowest step's share below it; (b) how tight: (right - left side) / first term,
median over units and steps (0: equality; below 0: violated); (c) the reduction terms next to the first
term; (d) the signs Theorem 4.2 needs to imply more predictive gradients (gamma^2 / sigma^2 is in the claims).

The derivation behind "1/m" is in tests/test_theorems.py and bnlab/probes/theorems.py. The claims were
written before the runs they judge were drawn.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from experiments.lib.claims import Claim
from experiments.lib.runs import each_model

ORDER = 21  # beyond the paper: after its figures and the curvature study

SIGNIFICANT = 0.1  # "significant": the reduction terms remove at least a tenth of the first term
MILD = 0.9  # "fairly mild assumptions": they hold at nine units in ten or more


def layer_table(runs, metric: str) -> pd.DataFrame:
    """(layer x step) table of a per-layer theorem metric, every seed's values in one column per step pooled
    by their mean (one row per BatchNorm layer)."""
    frames = []
    for r in runs:
        m = r.metrics[r.metrics.metric == metric]
        frames.append(m.pivot_table(index="layer", columns="step", values="value"))
    return pd.concat(frames).groupby(level=0).mean()


def _every_value(runs, metric: str) -> np.ndarray:
    return np.concatenate([r.metrics.value[r.metrics.metric == metric].to_numpy() for r in runs])


def draw(runs, path):
    models = each_model(runs)
    fig, axes = plt.subplots(len(models), 4, figsize=(19, 4.2 * len(models)), squeeze=False)
    for row, (name, chosen) in zip(axes, models, strict=True):
        _holds_panel(row[0], chosen), _gap_panel(row[1], chosen), _reduction_panel(row[2], chosen)
        _assumptions_panel(row[3], chosen)
        for ax, letter in zip(row, "abcd", strict=True):
            ax.set_title(f"{name} ({letter})")
            ax.set_xlabel("BatchNorm layer (after conv/linear layer #)")
    fig.suptitle("Theorems 4.1 and 4.2 measured per BatchNorm layer, over units and training steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


SERIES = (("thm41_printed", "4.1 as printed (1/√m)", "tab:red", "o", 6),
          ("thm41", "4.1 with 1/m (derived)", "tab:blue", "s", 9),  # larger: 4.2's markers often lie on it
          ("thm42", "4.2", "tab:green", "^", 5))


def _holds_panel(ax, runs):
    for key, label, color, marker, size in SERIES:
        table = layer_table(runs, f"{key}_holds")
        ax.plot(table.index, table.mean(1), color=color, marker=marker, ms=size, label=f"{label}: mean over steps")
        ax.plot(table.index, table.min(1), color=color, marker=marker, ms=size, ls=":", alpha=0.6,
                label="lowest step")
    ax.set_ylim(-0.05, 1.05), ax.set_ylabel("Share of units where it holds")
    ax.legend(fontsize=7, loc="best")


def _gap_panel(ax, runs):
    for key, label, color, marker, size in SERIES:
        table = layer_table(runs, f"{key}_gap_median")
        ax.plot(table.index, table.median(1), color=color, marker=marker, ms=size, label=label)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_ylabel("(right − left side) / first term, median"), ax.legend(fontsize=7)


def _reduction_panel(ax, runs):
    for metric, label, color in (("thm41_mean_share", "4.1: ⟨1,g⟩²/m", "tab:purple"),
                                 ("thm41_corr_share", "4.1: ⟨g,ŷ⟩²/m", "tab:blue"),
                                 ("thm42_reduction_share", "4.2: |γ⟨g,ŷ⟩|v|²/(mσ²)|", "tab:green")):
        table = layer_table(runs, metric).abs()
        ax.plot(table.index, table.median(1), color=color, marker="o", label=label)
    ax.axhline(SIGNIFICANT, color="black", lw=0.8, ls="--", label=f"{SIGNIFICANT:g} of the first term")
    ax.set_yscale("log"), ax.set_ylabel("Reduction term / first term, median"), ax.legend(fontsize=7)


def _assumptions_panel(ax, runs):
    for metric, label, color in (("thm_corr_positive", "share with γ⟨g,ŷ⟩ > 0", "tab:blue"),
                                 ("thm42_hessian_nonneg", "share with vᵀHv ≥ 0", "tab:green")):
        table = layer_table(runs, metric)
        ax.plot(table.index, table.mean(1), color=color, marker="o", label=label)
    ax.set_ylim(-0.05, 1.05), ax.set_ylabel("Share of units (mean over steps)"), ax.legend(fontsize=7, loc="best")


THM41 = ("Theorem 4.1: ||∇_{y_j} L̂||² ≤ γ²/σ_j² (||∇_{y_j} L||² − (1/m)⟨1, ∇_{y_j} L⟩² − (1/√m)⟨∇_{y_j} L, ŷ_j⟩²)")
THM42 = ("Theorem 4.2: (∇_{y_j} L̂)ᵀ (∂²L̂/∂y_j∂y_j) (∇_{y_j} L̂) ≤ γ²/σ² (∂L̂/∂y_j)ᵀ H_jj (∂L̂/∂y_j) "
         "− γ/(mσ²) ⟨ĝ_j, ŷ_j⟩ ||∂L̂/∂y_j||²")
REDUCTION = ("Section 4.2: 'note that ⟨1, ∂L/∂y⟩² grows quadratically in the dimension, so the middle term above is "
             "significant. Furthermore, ... the final inner product term in the above theorem is bounded away "
             "from zero'")
ASSUMPTIONS = ("Section 4.2: 'Note that if the quadratic forms involving the Hessian and the inner product "
               "⟨ŷ_j, ĝ_j⟩ are non-negative (both fairly mild assumptions), the theorem implies more predictive "
               "gradients.'")
SCALE = ("Section 4.2: 'σ_j tends to be large and highly uncontrolled in practice (cf. Appendix Figure 9), and "
         "thus the scaling by γ/σ may contribute to the relative \"flatness\"'")


def claims(runs):
    return [claim for name, chosen in each_model(runs) for claim in _model_claims(chosen, name)]


def _everywhere(runs, key: str, text: str, tolerance: float) -> tuple[bool, str, dict]:
    shares, gaps = _every_value(runs, f"{key}_holds"), _every_value(runs, f"{key}_gap_min")
    worst = layer_table(runs, f"{key}_holds").min(1)
    failing = [int(layer) for layer, share in worst.items() if share < 1]
    measured = (f"{text}: holds at every unit in {np.mean(shares == 1):.0%} of (layer, step) pairs; share of units "
                f"where it holds: mean {shares.mean():.3f}, lowest {shares.min():.3f}; worst gap / first term "
                f"{gaps.min():.3g} (tolerance {tolerance:g}); layers with a failing unit: "
                f"{failing if failing else 'none'}")
    return bool(shares.min() == 1), measured, {"share_mean": float(shares.mean()), "share_min": float(shares.min()),
                                               "worst_gap": float(gaps.min()), "failing_layers": failing,
                                               "per_layer_lowest_share": {int(k): float(v) for k, v in worst.items()}}


def _model_claims(runs, name: str) -> list[Claim]:
    tolerance = runs[0].cfg.probes.theorems.tolerance
    within = f"a unit counts as holding when (right − left side) ≥ −{tolerance:g} x its first term (float32 rounding)"
    printed_ok, printed_text, printed_values = _everywhere(runs, "thm41_printed", "as printed", tolerance)
    derived_ok, derived_text, derived_values = _everywhere(runs, "thm41", "with 1/m", tolerance)
    ok42, text42, values42 = _everywhere(runs, "thm42", "4.2", tolerance)
    mean_share = layer_table(runs, "thm41_mean_share")
    corr_share = layer_table(runs, "thm41_corr_share")
    reduction = (mean_share + corr_share).stack()
    corr_positive, hessian_nonneg = _every_value(runs, "thm_corr_positive"), _every_value(runs, "thm42_hessian_nonneg")
    scale = layer_table(runs, "thm41_scale").stack()
    layer_scales = scale.groupby(level=0).median()
    per_layer = {int(layer): {"mean_share": float(mean_share.loc[layer].median()),
                              "corr_share": float(corr_share.loc[layer].median())} for layer in mean_share.index}
    return [
        Claim(claim=f"{name}: Theorem 4.1 as printed holds for every unit at every measured step", quote=THM41,
              rule=f"for every BatchNorm layer, unit, measured step and seed; {within}",
              paper="proven (Appendix C, eq. 9); derived here: the last term is 1/m, and the printed bound is "
                    "violated whenever ⟨g, ŷ⟩ ≠ 0",
              measured=printed_text, holds=printed_ok, values=printed_values),
        Claim(claim=f"{name}: Theorem 4.1 with the derived 1/m holds for every unit at every measured step",
              quote=THM41 + " (with 1/m in place of 1/√m)", rule=f"as above; {within}",
              paper="an equality when eps = 0; with eps it holds with a little room", measured=derived_text,
              holds=derived_ok, values=derived_values),
        Claim(claim=f"{name}: Theorem 4.2 holds for every sampled unit at every measured step", quote=THM42,
              rule=f"for every BatchNorm layer, {runs[0].cfg.probes.theorems.units} units drawn at each measured "
                   f"step, every seed; a unit counts as holding when (right − left side) ≥ −{tolerance:g} x "
                   "(|first term| + |reduction term|)",
              paper="proven (Appendix C, eq. 50); derived here: an equality when eps = 0", measured=text42,
              holds=ok42, values=values42),
        Claim(claim=f"{name}: Theorem 4.1's reduction terms are significant next to its first term", quote=REDUCTION,
              rule=f"per layer and step, the median over units of ⟨1,g⟩²/(m|g|²) plus that of ⟨g,ŷ⟩²/(m|g|²) (the "
                   f"derived 1/m); its median over layers, steps and seeds ≥ {SIGNIFICANT:g}",
              paper="argued, not measured",
              measured=f"median reduction / first term {reduction.median():.3g} (mean term "
                       f"{mean_share.stack().median():.3g}, correlation term {corr_share.stack().median():.3g}); "
                       f"largest layer median {max(v['mean_share'] + v['corr_share'] for v in per_layer.values()):.3g}",
              holds=bool(reduction.median() >= SIGNIFICANT), values={"per_layer": per_layer}),
        Claim(claim=f"{name}: the assumptions under which Theorem 4.2 implies more predictive gradients hold",
              quote=ASSUMPTIONS,
              rule=f"over every layer, measured step and seed: the share of units with γ⟨ĝ, ŷ⟩ > 0 (all units) and "
                   f"the share with (∂L̂/∂y)ᵀ H (∂L̂/∂y) ≥ 0 (the sampled units) are both ≥ {MILD:g}",
              paper="assumed ('fairly mild')",
              measured=f"γ⟨ĝ, ŷ⟩ > 0 at {corr_positive.mean():.1%} of units, quadratic form ≥ 0 at "
                       f"{hessian_nonneg.mean():.1%}",
              holds=bool(corr_positive.mean() >= MILD and hessian_nonneg.mean() >= MILD),
              values={"corr_positive": float(corr_positive.mean()), "hessian_nonneg": float(hessian_nonneg.mean())}),
        Claim(claim=f"{name}: BatchNorm's scaling γ²/σ² is below 1", quote=SCALE,
              rule="the median over units of γ²/σ² per layer and step; its median over layers, steps and seeds < 1",
              paper="Fig 9 (σ large); the factor is not measured",
              measured=f"median γ²/σ² {scale.median():.3g} (layers' medians {layer_scales.min():.3g} to "
                       f"{layer_scales.max():.3g})",
              holds=bool(scale.median() < 1), values={"scale_median": float(scale.median())}),
    ]
