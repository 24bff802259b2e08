"""Verdicts over seeds (experiments.lib.claims): tie bands, rule outcomes, the three-valued verdict, means and
spreads on the rule's scale; and the landscape rule on synthetic runs (experiments.lib.landscape)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from experiments.lib.claims import (
    FAILS,
    HOLDS,
    TIE,
    UNDECIDED,
    Band,
    Quantity,
    all_of,
    compare,
    judge,
    judged,
    some_and_none_against,
    verdict,
)
from experiments.lib.runs import Run

# ---------------------------------------------------------------------------------------------- bands and rules


def test_a_band_is_a_zone_around_its_threshold():
    assert Band(1.1).zone(2.0) == pytest.approx((2.0 / 1.1, 2.2))
    assert Band(1.1).zone(-2.0) == pytest.approx((-2.2, -2.0 / 1.1))  # still from the lower edge to the upper
    assert Band(2.0, ratio=False).zone(10.0) == (8.0, 12.0)
    assert "1.1" in Band(1.1).describe() and "±2" in Band(2.0, ratio=False).describe()
    with pytest.raises(ValueError):
        Band(0.9)
    with pytest.raises(ValueError):
        Band(-1.0, ratio=False)


@pytest.mark.parametrize("value, op, expected", [
    (1.0, "<", HOLDS), (1.0, ">", FAILS),  # clearly below 2 (outside [2/1.1, 2.2])
    (3.0, "<", FAILS), (3.0, ">", HOLDS),  # clearly above
    (1.9, "<", TIE), (2.1, ">", TIE), (2.0, "<", TIE),  # inside the band, either side
    (math.nan, "<", TIE),  # nothing to judge
])
def test_compare_is_three_valued(value, op, expected):
    assert compare(value, op, 2.0, Band(1.1)) == expected


def test_compare_refuses_an_unknown_relation():
    with pytest.raises(ValueError, match="op"):
        compare(1.0, "<=", 2.0, Band(1.1))


@pytest.mark.parametrize("outcomes, every, some", [
    ((HOLDS, HOLDS), HOLDS, HOLDS),
    ((HOLDS, TIE), TIE, HOLDS),  # a tie beside a clear improvement: the measure still improves
    ((TIE, TIE), TIE, TIE),
    ((HOLDS, FAILS), FAILS, FAILS),
    ((TIE, FAILS), FAILS, FAILS),
])
def test_combinations(outcomes, every, some):
    assert all_of(*outcomes) == every
    assert some_and_none_against(*outcomes) == some


# ---------------------------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize("seeds, mean, expected", [
    ([HOLDS] * 3, HOLDS, HOLDS),
    ([HOLDS, HOLDS, TIE], HOLDS, UNDECIDED),  # with 3 seeds every seed must hold
    ([HOLDS, HOLDS, FAILS], HOLDS, UNDECIDED),  # the seeds disagree
    ([HOLDS] * 3, TIE, UNDECIDED),  # the mean's margin is inside the band
    ([FAILS, FAILS, HOLDS], FAILS, FAILS),  # fails on the mean and in most seeds
    ([FAILS, TIE, HOLDS], FAILS, UNDECIDED),  # fails on the mean but in one seed of three only
    ([FAILS] * 3, TIE, UNDECIDED),
    ([HOLDS, HOLDS, HOLDS, HOLDS, FAILS], HOLDS, HOLDS),  # with 5 seeds, one may dissent
    ([HOLDS, HOLDS, HOLDS, FAILS, FAILS], HOLDS, UNDECIDED),
    ([FAILS, FAILS, FAILS, HOLDS, HOLDS], FAILS, FAILS),
    ([HOLDS], HOLDS, HOLDS), ([TIE], TIE, UNDECIDED), ([FAILS], FAILS, FAILS),  # one seed: its own outcome
])
def test_verdict_over_seeds(seeds, mean, expected):
    assert verdict(seeds, mean) == expected


def test_judge_applies_the_rule_to_every_seed_and_to_the_means():
    """Standard's value above BN's in seeds 0 and 2 but not 1: the means hold, the seeds disagree."""
    quantities = {"none": Quantity([10.0, 3.0, 12.0], geometric=True), "batch": Quantity([2.0, 6.0, 2.0],
                                                                                          geometric=True)}
    result, outcomes = judge(quantities, lambda v: compare(v["none"], ">", v["batch"], Band(1.05)), [0, 1, 2])
    assert outcomes["seeds"] == {0: HOLDS, 1: FAILS, 2: HOLDS}
    assert outcomes["mean"] == HOLDS  # geometric means 7.1 and 2.9
    assert result == UNDECIDED
    with pytest.raises(ValueError, match="3 seeds"):
        judge({"x": Quantity([1.0, 2.0])}, lambda v: HOLDS, [0, 1, 2])


def test_a_judged_claim_records_every_seed_its_band_and_its_means():
    q = {"a": Quantity([0.4, 0.5, 0.6]), "b": Quantity([0.1, 0.2, 0.3])}
    claim = judged("a above b", "quote", "rule", "within ±0.05", "paper", "a 0.5 vs b 0.2", q,
                   lambda v: compare(v["a"] - v["b"], ">", 0.1, Band(0.05, ratio=False)), [0, 1, 2])
    assert claim.verdict == HOLDS and claim.tie_band == "within ±0.05"
    assert claim.values["a"]["per_seed"] == [0.4, 0.5, 0.6] and claim.values["a"]["scale"] == "arithmetic"
    assert claim.values["b"]["mean"] == pytest.approx(0.2) and claim.values["b"]["interval"] == [0.1, 0.3]
    assert claim.outcomes == {"mean": HOLDS, "seeds": {0: HOLDS, 1: HOLDS, 2: HOLDS}}


# ---------------------------------------------------------------------------------------------- means and spreads


def test_means_are_on_the_rules_scale_and_printed_with_their_spread():
    values = [1e3, 1e5, 1e4]
    geometric, arithmetic = Quantity(values, geometric=True), Quantity(values)
    assert geometric.mean == pytest.approx(1e4) and arithmetic.mean == pytest.approx(np.mean(values))
    assert geometric.interval == arithmetic.interval == (1e3, 1e5)  # min-max below 5 seeds
    assert geometric.text() == "1e+04 [1e+03, 1e+05]" and Quantity([42.123]).text(unit="%") == "42.1%"


def test_five_seeds_get_a_bootstrap_interval_of_the_mean_as_a_naive_loop_computes_it():
    values = [0.2, 0.9, 0.4, 0.35, 0.6, 0.5]
    for geometric in (False, True):
        q = Quantity(values, geometric=geometric)
        rng = np.random.default_rng(0)
        draws = rng.integers(0, len(values), size=(10_000, len(values)))
        means = []
        for row in draws:
            sample = [values[i] for i in row]
            means.append(math.exp(sum(math.log(v) for v in sample) / len(sample)) if geometric
                         else sum(sample) / len(sample))
        low, high = q.interval
        assert low == pytest.approx(float(np.quantile(means, 0.05, method="inverted_cdf"))) and high == pytest.approx(
            float(np.quantile(means, 0.95, method="inverted_cdf")))
        assert min(values) < low < q.mean < high < max(values)
    assert Quantity([3.0] * 5).interval == (3.0, 3.0)
    diverged = Quantity([1.0, 2.0, math.inf, 3.0, 4.0, 5.0], geometric=True)  # a diverged run's loss
    assert math.isinf(diverged.mean) and not math.isnan(diverged.interval[1])


def test_a_seed_without_a_value_leaves_the_mean_to_the_others_and_dissents():
    q = Quantity([1.0, math.nan, 3.0])
    assert q.mean == 2.0 and q.text() == "2 [1, 3]"
    _, outcomes = judge({"x": q}, lambda v: compare(v["x"], ">", 0.5, Band(1.1)), [0, 1, 2])
    assert outcomes == {"mean": HOLDS, "seeds": {0: HOLDS, 1: TIE, 2: HOLDS}}
    assert verdict([HOLDS, TIE, HOLDS, HOLDS, HOLDS], HOLDS) == HOLDS  # with 5 seeds one may have none


# ---------------------------------------------------------------------------------------------- the landscape rule


def fake_run(norm: str, seed: int, beta: dict, grad: dict, loss: dict, lr: float = 0.1, steps: int = 100) -> Run:
    """A run whose landscape metrics at the given steps are the given values (one multiplier, so that the
    loss range is 0: only gradient predictiveness and beta vary)."""
    cfg = OmegaConf.create({"seed": seed, "norm": {"kind": norm, "noise": {"enabled": False}}, "optim": {"lr": lr},
                            "train": {"steps": steps}, "model": {"name": "vgg"}})
    rows = []
    for step in beta:
        rows += [(step, "beta", 0, beta[step]), (step, "grad_diff@0.5", 0, grad[step]),
                 (step, "landscape_loss@0.5", 0, loss[step]), (step, "landscape_loss@1", 0, loss[step] * 2)]
    metrics = pd.DataFrame(rows, columns=["step", "metric", "layer", "value"])
    return Run(cfg, None, metrics)


def test_window_statistics_weigh_each_step_by_the_steps_it_stands_for():
    from experiments.lib.landscape import window_statistics

    # dense early (every 5 steps up to 20), then every 20: a value per step it stands for, as a naive expansion
    steps = [0, 5, 10, 15, 20, 40, 60, 80]
    values = pd.Series([9.0, 8.0, 7.0, 6.0, 1.0, 2.0, 3.0, 4.0], index=steps)
    stats = window_statistics(values, end=100)
    expanded = np.repeat(values.to_numpy(), np.diff(steps + [100]))
    assert stats["median"] == np.quantile(expanded, 0.5, method="inverted_cdf")
    assert stats["q90"] == np.quantile(expanded, 0.9, method="inverted_cdf")
    assert stats["peak"] == 9.0
    early = window_statistics(values, end=20)  # the window before step 20: uniform weights
    assert early["median"] == np.quantile([9.0, 8.0, 7.0, 6.0], 0.5, method="inverted_cdf")


def landscape_runs(bn_beta: float, bn_grad: float, std_beta: float, std_grad: float, jitter=(1.0, 1.0, 1.0)):
    steps = range(0, 100, 10)
    runs = []
    for seed, j in enumerate(jitter):
        for norm, beta, grad in (("batch", bn_beta, bn_grad), ("none", std_beta, std_grad)):
            runs.append(fake_run(norm, seed, {s: beta * j for s in steps}, {s: grad * j for s in steps},
                                 {s: 1.0 for s in steps}))
    return runs


@pytest.mark.parametrize("bn, std, expected", [
    ((15.0, 5.0), (40.0, 50.0), HOLDS),  # beta below the plateau (2/lr = 20) for BN, far above for standard
    ((15.0, 5.0), (18.0, 50.0), UNDECIDED),  # both betas on the plateau (raised to 21): beta ties, and every
    # measure must be smaller for the claim to hold
    ((15.0, 5.0), (40.0, 5.2), UNDECIDED),  # gradient predictiveness within the 10% band
    ((15.0, 50.0), (40.0, 5.0), FAILS),  # BN's gradient predictiveness clearly above
])
def test_the_landscape_rule_on_synthetic_runs(bn, std, expected):
    from experiments.lib.landscape import compare_landscape

    runs = landscape_runs(*bn, *std)
    text, q, decide = compare_landscape(runs, "batch", early=False, measures=("grad_pred", "beta"))
    result, outcomes = judge(q, decide, [0, 1, 2])
    assert result == expected, (text, outcomes)


def test_the_landscape_rule_is_undecided_when_one_seed_turns_around():
    from experiments.lib.landscape import compare_landscape

    runs = landscape_runs(15.0, 5.0, 40.0, 20.0)
    # seed 2's BatchNorm run has standard's spikes (and more): the mean still holds, that seed does not
    runs[4] = fake_run("batch", 2, {s: 60.0 for s in range(0, 100, 10)}, {s: 30.0 for s in range(0, 100, 10)},
                       {s: 1.0 for s in range(0, 100, 10)})
    _, q, decide = compare_landscape(runs, "batch", early=False, measures=("grad_pred", "beta"))
    result, outcomes = judge(q, decide, [0, 1, 2])
    assert outcomes["seeds"] == {0: HOLDS, 1: HOLDS, 2: FAILS} and outcomes["mean"] == HOLDS
    assert result == UNDECIDED


def test_results_from_before_three_valued_verdicts_are_dropped_not_merged(tmp_path):
    import json

    from experiments.lib.report import write_results

    old = {"figure1": {"seeds": 1, "notes": "", "claims": [{"claim": "x", "holds": True, "measured": "1"}]},
           "figure2": {"seeds": 1, "notes": "", "claims": []}}
    (tmp_path / "claims.json").write_text(json.dumps(old))
    claim = judged("a", "q", "r", "band", "p", "m", {"v": Quantity([1.0])}, lambda v: HOLDS, [0])
    write_results(tmp_path, "figure3", [claim], "notes", 1, "smoke", order=["figure1", "figure2", "figure3"])
    data = json.loads((tmp_path / "claims.json").read_text())
    assert list(data) == ["figure2", "figure3"]  # figure1's old-form entry is gone; figure2 had no claims
    readme = (tmp_path / "README.md").read_text()
    assert "## figure3" in readme and "| a | q | r | band | p | m | holds; mean: holds | holds |" in readme


def test_the_spectrum_figures_outlier_ratio_by_hand():
    """The top Ritz value over the bulk's edge: the smallest |Ritz value| below which all but BULK_MASS (1e-3) of
    the quadrature's weight lies; capped at CAP where the bulk has collapsed onto 0."""
    from experiments.spectrum import CAP, outlier_ratio

    nodes = np.array([-2.0, -0.5, 0.1, 1.0, 3.0, 60.0])
    weights = np.array([0.1, 0.3, 0.3, 0.2, 0.0995, 0.0005])  # 60 carries 5e-4 < 1e-3: an outlier; 3 is the edge
    assert outlier_ratio(nodes, weights) == pytest.approx(20.0)
    weights = np.array([0.1, 0.3, 0.3, 0.2, 0.098, 0.002])  # now 60 carries more than 1e-3: it is the edge itself
    assert outlier_ratio(nodes, weights) == pytest.approx(1.0)
    collapsed = np.array([1e-9, -1e-9, 5.0])
    assert outlier_ratio(collapsed, np.array([0.6, 0.3999, 0.0001])) == CAP
    assert math.isnan(outlier_ratio(np.array([-1.0, -2.0]), np.array([0.5, 0.5])))


def test_all_draws_the_papers_figures_and_beyond_the_rest():
    from experiments import figure_group, figure_names

    names = figure_names()
    beyond = figure_group(names, "beyond")
    assert beyond == ["spectrum", "normalizers"] and "curvature" in figure_group(names, "all")
    assert sorted(figure_group(names, "all") + beyond) == sorted(names)


def test_the_isolated_count_is_n_times_the_weight_above_the_threshold(monkeypatch):
    from experiments import spectrum

    nodes = np.array([-2.0, -0.5, 0.1, 1.0, 3.0, 60.0, 7.0])
    weights = np.array([0.1, 0.3, 0.3, 0.2, 0.0995, 4e-4, 1e-4])
    assert spectrum.bulk_edge(nodes, weights) == 3.0
    monkeypatch.setattr(spectrum, "quadrature", lambda run, mode, step: (nodes, weights))

    class Model:
        def parameters(self):
            return [torch.zeros(1000)]  # n = 1000

    monkeypatch.setattr("bnlab.models.build_model", lambda cfg: Model())
    run = type("R", (), {"cfg": None})()
    # above 2 x 3 = 6: the Ritz values 60 and 7, weight 5e-4: half an eigenvalue of n = 1000
    assert spectrum.isolated_count(run, "train", 0) == pytest.approx(0.5)
