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

from experiments.lib.claims import FAILS, HOLDS, TIE, Band, Claim, Quantity, all_of, compare, judged, per_seed, seeds_of
from experiments.lib.plotting import caption, seeds_in
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
    n = seeds_in(runs)
    caption(fig, f"Each point pools the measured steps of {n} seed{'s' if n > 1 else ''} (their mean at each step).")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


SERIES = (("thm41_printed", "4.1 as printed (1/√m)", "tab:red", "o", 6),
          ("thm41", "4.1 with 1/m (derived)", "tab:blue", "s", 9),  # larger: 4.2's markers often lie on it
          ("thm42", "4.2 as printed", "tab:green", "^", 5))
EXACT = ("thm42_exact", "4.2 with eps (exact)", "tab:olive", "v", 5)  # holds within tolerance both ways


def _holds_panel(ax, runs):
    for key, label, color, marker, size in (*SERIES, EXACT):
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
    ax.set_yscale("symlog", linthresh=1e-6)
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


FAIL_FACTOR = 10.0  # a worst gap below -FAIL_FACTOR x tolerance fails; between that and -tolerance, a tie
SHARE_BAND = Band(0.02, ratio=False)  # shares of units within 2 points of a threshold: a tie
RATIO_BAND = Band(1.05)  # medians of ratios within 5% of their threshold: a tie
SIGNIFICANT_BAND = Band(1.1)


def within_tolerance(worst_gap: float, tolerance: float) -> str:
    """An inequality (or identity) measured at every unit: HOLDS when its worst gap / size is at least -tolerance,
    FAILS below -FAIL_FACTOR x tolerance, TIE between."""
    if np.isnan(worst_gap):
        return TIE
    if worst_gap >= -tolerance:
        return HOLDS
    return FAILS if worst_gap < -FAIL_FACTOR * tolerance else TIE


def _per_run(runs, metric: str, summary) -> Quantity:
    """A Quantity over seeds of `summary` applied to each run's values of a per-layer theorem metric."""
    return per_seed(runs, lambda r: float(summary(r.metrics.value[r.metrics.metric == metric].to_numpy())))


def _everywhere(runs, key: str, text: str, tolerance: float, size: str = "first term") -> tuple[str, dict]:
    """(measured text, quantities) of an inequality checked at every measured unit."""
    q = {"worst_gap": _per_run(runs, f"{key}_gap_min", np.min), "share_mean": _per_run(runs, f"{key}_holds", np.mean),
         "share_min": _per_run(runs, f"{key}_holds", np.min)}
    worst = layer_table(runs, f"{key}_holds").min(1)
    failing = [int(layer) for layer, share in worst.items() if share < 1]
    measured = (f"{text}: share of units where it holds: mean {q['share_mean'].text()}, lowest step "
                f"{q['share_min'].text()}; worst gap / {size} {q['worst_gap'].text()} (tolerance {tolerance:g}); "
                f"layers with a failing unit in some seed: {failing if failing else 'none'}")
    return measured, q


def _model_claims(runs, name: str) -> list[Claim]:
    tolerance = runs[0].cfg.probes.theorems.tolerance
    seeds = seeds_of(runs)
    within = f"a unit holds when (right − left side) ≥ −{tolerance:g} x its size (a tolerance for float32 rounding)"
    band = (f"a worst gap between −{tolerance:g} and −{FAIL_FACTOR * tolerance:g} (x its size) is a tie; below, the "
            "claim fails")

    def everywhere(v):
        return within_tolerance(v["worst_gap"], tolerance)

    printed_text, printed_q = _everywhere(runs, "thm41_printed", "as printed", tolerance)
    derived_text, derived_q = _everywhere(runs, "thm41", "with 1/m", tolerance)
    text42, q42 = _everywhere(runs, "thm42", "as printed", tolerance, "(|first term| + |reduction term|)")
    exact = {"worst_gap": _per_run(runs, "thm42_exact_gap_max", lambda v: -np.max(v)),
             "explained": _per_run(runs, "thm42_explained", np.min),
             "eps_min": _per_run(runs, "thm42_eps_min", np.min)}
    reduction = per_seed(runs, lambda r: float((layer_table([r], "thm41_mean_share")
                                                 + layer_table([r], "thm41_corr_share")).stack().median()),
                         geometric=True)
    mean_share = per_seed(runs, lambda r: float(layer_table([r], "thm41_mean_share").stack().median()), geometric=True)
    corr_share = per_seed(runs, lambda r: float(layer_table([r], "thm41_corr_share").stack().median()), geometric=True)
    corr_positive = _per_run(runs, "thm_corr_positive", np.mean)
    hessian_nonneg = _per_run(runs, "thm42_hessian_nonneg", np.mean)
    scale = per_seed(runs, lambda r: float(layer_table([r], "thm41_scale").stack().median()), geometric=True)
    layer_scales = layer_table(runs, "thm41_scale").median(1)
    return [
        judged(f"{name}: Theorem 4.1 as printed holds for every unit at every measured step", THM41,
               f"for every BatchNorm layer, unit and measured step; {within}", band,
               "proven (Appendix C, eq. 9); derived here: the last term is 1/m, and the printed bound is violated "
               "whenever ⟨g, ŷ⟩ ≠ 0", printed_text, printed_q, everywhere, seeds),
        judged(f"{name}: Theorem 4.1 with the derived 1/m holds for every unit at every measured step",
               THM41 + " (with 1/m in place of 1/√m)", f"as above; {within}", band,
               "an equality when eps = 0; with eps it holds with a little room", derived_text, derived_q, everywhere,
               seeds),
        judged(f"{name}: Theorem 4.2 as printed holds for every sampled unit at every measured step", THM42,
               f"for every BatchNorm layer, {runs[0].cfg.probes.theorems.units} units drawn at each measured step; a "
               f"unit holds when (right − left side) ≥ −{tolerance:g} x (|first term| + |reduction term|)", band,
               "proven (Appendix C, eq. 50) for eps = 0; derived here: an equality there, and with BatchNorm's eps "
               "the printed right-hand side is off by terms of order eps/σ² of either sign",
               f"{text42}; eps moves the printed bound by down to {exact['eps_min'].text()} of its size",
               q42, everywhere, seeds),
        judged(f"{name}: with eps included, Theorem 4.2's second-order expansion is exact at every sampled unit "
               "(what is left of the printed bound's gaps is rounding)", THM42 + " (its derivation, with eps)",
               f"the exact second derivative with eps (bnlab/probes/theorems.py) against the measured left side at "
               f"every sampled unit and step: |gap| ≤ {tolerance:g} x the terms' size; the share of the printed "
               "bound's failing units that it explains is reported", band,
               "derived here; tests/test_theorems.py checks it against dense Hessians in float64 (to 1e-9)",
               f"largest |gap| / size {(-exact['worst_gap'].mean):.3g} (per seed: "
               f"{', '.join(f'{-v:.2g}' for v in exact['worst_gap'].per_seed)}); share of the printed bound's "
               f"failing units it explains (lowest step) {exact['explained'].text()}", exact,
               lambda v: within_tolerance(v["worst_gap"], tolerance), seeds),
        judged(f"{name}: Theorem 4.1's reduction terms are significant next to its first term", REDUCTION,
               "per layer and step, the median over units of ⟨1,g⟩²/(m|g|²) plus that of ⟨g,ŷ⟩²/(m|g|²) (the "
               f"derived 1/m); its median over layers and steps, geometric mean over seeds, above {SIGNIFICANT:g}",
               f"a median ties with {SIGNIFICANT:g} {SIGNIFICANT_BAND.describe()}", "argued, not measured",
               f"median reduction / first term {reduction.text()} (mean term {mean_share.text()}, correlation term "
               f"{corr_share.text()})", {"reduction": reduction, "mean_term": mean_share, "corr_term": corr_share},
               lambda v: compare(v["reduction"], ">", SIGNIFICANT, SIGNIFICANT_BAND), seeds),
        judged(f"{name}: the assumptions under which Theorem 4.2 implies more predictive gradients hold", ASSUMPTIONS,
               "over every layer and measured step: the share of units with γ⟨ĝ, ŷ⟩ > 0 (all units) and the share "
               f"with (∂L̂/∂y)ᵀ H (∂L̂/∂y) ≥ 0 (the sampled units) both above {MILD:g}",
               f"a share ties with {MILD:g} {SHARE_BAND.describe()}", "assumed ('fairly mild')",
               f"γ⟨ĝ, ŷ⟩ > 0 at {corr_positive.text()} of units, quadratic form ≥ 0 at {hessian_nonneg.text()}",
               {"corr_positive": corr_positive, "hessian_nonneg": hessian_nonneg},
               lambda v: all_of(compare(v["corr_positive"], ">", MILD, SHARE_BAND),
                                compare(v["hessian_nonneg"], ">", MILD, SHARE_BAND)), seeds),
        judged(f"{name}: BatchNorm's scaling γ²/σ² is below 1", SCALE,
               "the median over units of γ²/σ² per layer and step; its median over layers and steps, geometric mean "
               "over seeds, below 1", f"a median ties with 1 {RATIO_BAND.describe()}",
               "Fig 9 (σ large); the factor is not measured",
               f"median γ²/σ² {scale.text()} (layers' medians {layer_scales.min():.3g} to {layer_scales.max():.3g})",
               {"scale": scale}, lambda v: compare(v["scale"], "<", 1.0, RATIO_BAND), seeds),
    ]
