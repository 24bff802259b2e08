"""Theorems 4.1 and 4.2 of the paper, derived and measured.

The derivation, for one unit with batch values y in R^m, mu its mean, sigma^2 = mean((y - mu)^2) + eps,
y-hat = (y - mu) / sigma, z = gamma y-hat + beta, g = dL/dz:

  dL/dy = gamma/sigma (g - <1,g>/m 1 - <g,y-hat>/m y-hat)                      (the paper's (4), (5))
  |dL/dy|^2 = gamma^2/sigma^2 (|g|^2 - <1,g>^2/m - <g,y-hat>^2/m (2 - |y-hat|^2/m))

because 1 and y-hat are orthogonal and |1|^2 = m. With eps = 0, |y-hat|^2 = m and the last term is
<g,y-hat>^2 / m: Theorem 4.1 holds with equality and 1/m, not the printed 1/sqrt(m) (the proof's step from
(8) to (9) divides by |y-hat| instead of |y-hat|^2). The printed right-hand side is smaller than the true
value by (1/sqrt(m) - 1/m) gamma^2/sigma^2 <g,y-hat>^2, so the printed inequality is false whenever m > 1
and <g,y-hat> != 0.

Theorem 4.2, with v = dL/dy (orthogonal to 1 and y-hat when eps = 0): along y + t v the mean is fixed and
sigma(t)^2 = sigma^2 + t^2 |v|^2 / m, so z(y + t v) = gamma/sigma ((y - mu) + t v)(1 - t^2 |v|^2 / (2 m sigma^2))
+ O(t^3) and d^2/dt^2 L(z(y + t v)) = (gamma/sigma)^2 v^T H v - gamma/(m sigma^2) <g,y-hat> |v|^2: the
paper's (50), an equality.

Each is checked here against autograd and dense Hessians (torch.autograd.functional.hessian), and the probe
bnlab.probes.batchnorm_theorems against the same independent computation.
"""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnlab import probes
from bnlab.models.dln import DeepLinearNet
from bnlab.models.dln_stack import StackedDLN
from bnlab.norms import make_norm

M, C = 12, 3


def unit_problem(eps: float, seed: int = 0):
    """A BatchNorm layer of C units on a batch of M, followed by a smooth nonlinear loss, in float64:
    (y, gamma, beta, loss of z, loss of y)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(M, C, generator=g, dtype=torch.float64) * 2 + 0.5
    gamma = torch.rand(C, generator=g, dtype=torch.float64) + 0.5
    beta = torch.randn(C, generator=g, dtype=torch.float64)
    a = torch.randn(C, 4, generator=g, dtype=torch.float64)
    b = torch.randn(M, 4, generator=g, dtype=torch.float64)

    def loss_of_z(z):
        return (torch.tanh(z @ a) * b).sum() + 0.1 * (z ** 3).sum()

    def normalize(y):
        centred = y - y.mean(0)
        return centred / (centred.square().mean(0) + eps).sqrt()

    def loss_of_y(y):
        return loss_of_z(gamma * normalize(y) + beta)

    return y, gamma, beta, loss_of_z, loss_of_y, normalize


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_theorem_41_is_an_equality_with_1_over_m_and_the_printed_bound_fails(seed):
    y, gamma, beta, loss_of_z, loss_of_y, normalize = unit_problem(eps=0.0, seed=seed)
    v = torch.autograd.functional.jacobian(loss_of_y, y)
    z = gamma * normalize(y) + beta
    g = torch.autograd.functional.jacobian(loss_of_z, z)
    y_hat, sigma2 = normalize(y), (y - y.mean(0)).square().mean(0)
    for c in range(C):
        scale = gamma[c] ** 2 / sigma2[c]
        corr = (g[:, c] @ y_hat[:, c]) ** 2
        base = g[:, c].square().sum() - g[:, c].sum() ** 2 / M
        lhs = v[:, c].square().sum()
        assert float(lhs) == pytest.approx(float(scale * (base - corr / M)), rel=1e-12)
        printed = scale * (base - corr / math.sqrt(M))
        assert corr > 1e-6 and lhs > printed  # the printed inequality is violated
        assert float(lhs - printed) == pytest.approx(float(scale * corr * (1 / math.sqrt(M) - 1 / M)), rel=1e-9)


def test_with_eps_the_derived_bound_holds_with_the_room_eps_leaves():
    y, gamma, beta, loss_of_z, loss_of_y, normalize = unit_problem(eps=0.5)  # large, so the room shows
    v = torch.autograd.functional.jacobian(loss_of_y, y)
    z = gamma * normalize(y) + beta
    g = torch.autograd.functional.jacobian(loss_of_z, z)
    y_hat, sigma2 = normalize(y), (y - y.mean(0)).square().mean(0) + 0.5
    for c in range(C):
        scale = gamma[c] ** 2 / sigma2[c]
        corr = (g[:, c] @ y_hat[:, c]) ** 2 / M
        base = g[:, c].square().sum() - g[:, c].sum() ** 2 / M
        exact = scale * (base - corr * (2 - y_hat[:, c].square().sum() / M))
        assert float(v[:, c].square().sum()) == pytest.approx(float(exact), rel=1e-12)
        assert v[:, c].square().sum() < scale * (base - corr)


@pytest.mark.parametrize("seed", [0, 1])
def test_theorem_42_is_an_equality_against_dense_hessians(seed):
    y, gamma, beta, loss_of_z, loss_of_y, normalize = unit_problem(eps=0.0, seed=seed)
    z = gamma * normalize(y) + beta
    g = torch.autograd.functional.jacobian(loss_of_z, z)
    v = torch.autograd.functional.jacobian(loss_of_y, y)
    y_hat, sigma2 = normalize(y), (y - y.mean(0)).square().mean(0)
    for c in range(C):
        def of_yc(yc, c=c):
            return loss_of_y(torch.cat([y[:, :c], yc[:, None], y[:, c + 1:]], 1))

        def of_zc(zc, c=c):
            return loss_of_z(torch.cat([z[:, :c], zc[:, None], z[:, c + 1:]], 1))

        hessian_y = torch.autograd.functional.hessian(of_yc, y[:, c])
        hessian_z = torch.autograd.functional.hessian(of_zc, z[:, c])
        vc = v[:, c]
        lhs = vc @ hessian_y @ vc
        first = gamma[c] ** 2 / sigma2[c] * (vc @ hessian_z @ vc)
        reduction = gamma[c] / (M * sigma2[c]) * (g[:, c] @ y_hat[:, c]) * vc.square().sum()
        assert float(lhs) == pytest.approx(float(first - reduction), rel=1e-9, abs=1e-12 * float(abs(first)))
        assert abs(float(reduction)) > 1e-6 * abs(float(first))  # the reduction term is really there


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_theorem_42_with_eps_is_the_exact_expansion_and_the_printed_bound_fails_by_it(seed):
    """With eps > 0: along y + t v, a = <y - mean, v>/m, sigma(t)^2 = sigma^2 + 2 t a + t^2 |v|^2/m, so
    1/sigma(t) = 1/sigma (1 - t a/sigma^2 + t^2 (3 a^2/(2 sigma^4) - |v|^2/(2 m sigma^2))) + O(t^3) and
    y-hat(t) = (y - mean + t v)/sigma(t) has y-hat' = (v - a/sigma y-hat)/sigma and
    y-hat'' = y-hat (3 a^2/sigma^4 - |v|^2/(m sigma^2)) - 2 a v/sigma^3; the second derivative of L(z(t)) is
    (gamma y-hat')^T H (gamma y-hat') + gamma <g, y-hat''>. Checked here against the dense Hessian in y."""
    eps = 0.5  # large, so that the eps terms show
    y, gamma, beta, loss_of_z, loss_of_y, normalize = unit_problem(eps=eps, seed=seed)
    z = gamma * normalize(y) + beta
    g = torch.autograd.functional.jacobian(loss_of_z, z)
    v = torch.autograd.functional.jacobian(loss_of_y, y)
    y_hat, sigma2 = normalize(y), (y - y.mean(0)).square().mean(0) + eps
    for c in range(C):
        def of_yc(yc, c=c):
            return loss_of_y(torch.cat([y[:, :c], yc[:, None], y[:, c + 1:]], 1))

        def of_zc(zc, c=c):
            return loss_of_z(torch.cat([z[:, :c], zc[:, None], z[:, c + 1:]], 1))

        lhs = v[:, c] @ torch.autograd.functional.hessian(of_yc, y[:, c]) @ v[:, c]
        hessian_z = torch.autograd.functional.hessian(of_zc, z[:, c])
        sigma, vc, gc, yh = sigma2[c].sqrt(), v[:, c], g[:, c], y_hat[:, c]
        a = sigma * (yh @ vc) / M
        w = gamma[c] / sigma * (vc - a / sigma * yh)
        second = ((gc @ yh) * (3 * a ** 2 / sigma2[c] ** 2 - vc.square().sum() / (M * sigma2[c]))
                  - 2 * a * (gc @ vc) / sigma ** 3)
        exact = w @ hessian_z @ w + gamma[c] * second
        assert float(lhs) == pytest.approx(float(exact), rel=1e-9)
        reduction = gamma[c] / (M * sigma2[c]) * (gc @ yh) * vc.square().sum()
        printed = gamma[c] ** 2 / sigma2[c] * (vc @ hessian_z @ vc) - reduction
        assert abs(float(printed - exact)) > 1e-6 * abs(float(exact))  # eps moves the printed bound off the truth


def small_model(kind: str, inplace: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    norm = nn.BatchNorm1d(5) if kind == "torch" else make_norm("batch", 5)
    model = nn.Sequential(nn.Linear(4, 5), norm, nn.ReLU(inplace=inplace), nn.Linear(5, 5), make_norm("batch", 5),
                          nn.Tanh(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "running_var"):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


def batch(n: int = 10, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def independent(model, x, target, layer_index: int, unit: int):
    """Both sides for one unit, by dense Hessians of the loss as a function of that unit's pre-normalization
    values (the layer before it run once, the layer and everything after it recomputed by hand)."""
    norm = model[layer_index]
    head = model[:layer_index]
    tail = model[layer_index + 1:]
    y = head(x).detach()
    gamma, beta, eps = norm.weight.detach(), norm.bias.detach(), norm.eps

    def z_of(y):
        centred = y - y.mean(0)
        return gamma * centred / (centred.square().mean(0) + eps).sqrt() + beta

    def replace(t, column, values):
        return torch.cat([t[:, :column], values[:, None], t[:, column + 1:]], 1)

    def loss_of_z(z):
        return F.cross_entropy(tail(z), target)

    z = z_of(y)
    v = torch.autograd.functional.jacobian(lambda y: loss_of_z(z_of(y)), y)[:, unit]
    g = torch.autograd.functional.jacobian(loss_of_z, z)[:, unit]
    hessian_y = torch.autograd.functional.hessian(lambda yc: loss_of_z(z_of(replace(y, unit, yc))), y[:, unit])
    hessian_z = torch.autograd.functional.hessian(lambda zc: loss_of_z(replace(z, unit, zc)), z[:, unit])
    centred = y[:, unit] - y[:, unit].mean()
    sigma2 = centred.square().mean() + eps
    y_hat = centred / sigma2.sqrt()
    scale = gamma[unit] ** 2 / sigma2
    m = y.shape[0]
    return {"lhs41": v.square().sum(), "first": scale * g.square().sum(), "mean_term": scale * g.sum() ** 2 / m,
            "corr_term": scale * (g @ y_hat) ** 2 / m, "lhs42": v @ hessian_y @ v,
            "hessian_term": scale * (v @ hessian_z @ v),
            "reduction42": gamma[unit] / (m * sigma2) * (g @ y_hat) * v.square().sum()}


@pytest.mark.parametrize("kind", ["bnlab", "torch"])
def test_the_probe_measures_both_sides_as_the_dense_computation(kind):
    model = small_model(kind)
    x, target = batch()
    out = probes.batchnorm_theorems(model, F.cross_entropy, x, target, units=None)
    assert list(out) == ["1", "4"]
    model.train()
    for name, index in (("1", 1), ("4", 4)):
        result = out[name]
        assert result["m"] == 10 and result["units42"].tolist() == list(range(5))
        for unit in range(5):
            expected = independent(model, x, target, index, unit)
            for key, value in expected.items():
                assert float(result[key][unit]) == pytest.approx(float(value), rel=1e-9, abs=1e-14), (name, unit, key)
        r = result
        assert torch.allclose(r["rhs41"], r["first"] - r["mean_term"] - r["corr_term"])
        assert torch.allclose(r["rhs41_printed"], r["first"] - r["mean_term"] - math.sqrt(10) * r["corr_term"])
        assert (r["lhs41"] <= r["rhs41"]).all()  # derived: holds (eps leaves a little room)
        assert torch.allclose(r["rhs42"], r["hessian_term"] - r["reduction42"])
        for unit in range(5):  # eps included, the right-hand side is the dense second derivative itself
            expected = independent(model, x, target, index, unit)["lhs42"]
            assert float(r["rhs42_exact"][unit]) == pytest.approx(float(expected), rel=1e-9, abs=1e-14)


def test_convolutional_units_run_over_batch_and_positions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), make_norm("batch", 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 3)).double()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    target = torch.tensor([0, 2, 1])
    result = probes.batchnorm_theorems(model, F.cross_entropy, x, target, units=None)["1"]
    assert result["m"] == 3 * 16
    # the same layer seen as a BatchNorm1d over (batch x positions) rows, its gradients by autograd
    y = model[0](x).detach().requires_grad_()
    loss = F.cross_entropy(model[2:](model[1](y)), target)
    v = torch.autograd.grad(loss, y)[0]
    assert torch.allclose(result["lhs41"], v.square().sum((0, 2, 3)), rtol=1e-10)
    assert torch.allclose(result["lhs41"], result["rhs41"], rtol=1e-3)  # eps is small next to these variances


def test_units_are_drawn_from_the_generator_and_the_model_is_left_as_found():
    model = small_model("bnlab", inplace=True)  # an in-place ReLU after the layer changes nothing
    x, target = batch()
    before = [t.clone() for t in list(model.parameters()) + list(model.buffers())]
    model.eval()
    a, b = (probes.batchnorm_theorems(model, F.cross_entropy, x, target, units=2,
                                      generator=torch.Generator().manual_seed(3)) for _ in range(2))
    assert not model.training
    for t, saved in zip(list(model.parameters()) + list(model.buffers()), before, strict=True):
        assert torch.equal(t, saved)
    for name in a:
        assert len(a[name]["units42"]) == 2 and torch.equal(a[name]["units42"], b[name]["units42"])
        assert torch.equal(a[name]["lhs42"], b[name]["lhs42"])
    full = probes.batchnorm_theorems(model, F.cross_entropy, x, target, units=None)
    for name in a:
        picked = a[name]["units42"]
        assert torch.allclose(a[name]["lhs42"], full[name]["lhs42"][picked], rtol=1e-12)


def test_noisy_batchnorm_is_skipped_and_bad_input_refused():
    torch.manual_seed(0)
    noise = dict(n_mu=0.2, n_sigma=1.5, r_mu=0.05, r_sigma=0.1)
    noisy = nn.Sequential(nn.Linear(4, 5), make_norm("batch", 5, noise=noise), nn.ReLU(), nn.Linear(5, 3)).double()
    x, target = batch()
    assert probes.batchnorm_theorems(noisy, F.cross_entropy, x, target) == {}
    with pytest.raises(ValueError, match="units"):
        probes.batchnorm_theorems(small_model("bnlab"), F.cross_entropy, x, target, units=0)
    stacked = StackedDLN([DeepLinearNet(3, 2, "batch") for _ in range(2)], "batch", 0.1, 1e-5, False)
    with pytest.raises(ValueError, match="stacked"):
        probes.batchnorm_theorems(stacked, F.mse_loss, torch.randn(8, 3), torch.randn(8, 3))
    data_first = nn.Sequential(make_norm("batch", 4), nn.Linear(4, 3)).double()
    with pytest.raises(ValueError, match="pre-normalization"):
        probes.batchnorm_theorems(data_first, F.cross_entropy, x, target)


# ------------------------------------------------------------------------- in the training loop

SMALL_DLN = ["model=dln", "model.depth=3", "model.width=4", "norm=batch", "scale=smoke", "train.steps=12",
             "probes=none", "probes.activations.layers=[1]", "logger=none", "runtime.progress=false",
             "runtime.log_every=4"]
THEOREMS = ["probes.theorems.enabled=true", "probes.theorems.every=5", "probes.theorems.units=2"]


def test_theorem_rows_summarize_units_as_a_naive_loop_does():
    from bnlab.training.probe_schedule import theorem_rows

    g = torch.Generator().manual_seed(0)
    n = 9
    r = {key: torch.randn(n, generator=g, dtype=torch.float64) for key in
         ("lhs41", "rhs41", "rhs41_printed", "mean_term", "corr_term", "corr", "lhs42", "rhs42", "hessian_term",
          "reduction42")}
    r["rhs42_exact"] = r["lhs42"] + 0.2 * torch.randn(n, generator=g, dtype=torch.float64)  # rounding, say
    r["first"] = torch.rand(n, generator=g, dtype=torch.float64)
    r["first"][3] = 0.0  # a unit whose gradient vanishes: holds, gap 0
    r["scale"] = torch.rand(n, generator=g, dtype=torch.float64)
    rows = theorem_rows(r, tolerance=0.1)

    def gap(right, left, size):
        return [(float(right[i]) - float(left[i])) / float(size[i]) if size[i] > 0 else 0.0 for i in range(n)]

    gaps = gap(r["rhs41"], r["lhs41"], r["first"])
    size42 = [abs(float(a)) + abs(float(b)) for a, b in zip(r["hessian_term"], r["reduction42"], strict=True)]
    gaps42 = gap(r["rhs42"], r["lhs42"], size42)
    assert rows["thm41_holds"] == pytest.approx(sum(x >= -0.1 for x in gaps) / n)
    assert rows["thm41_gap_min"] == pytest.approx(min(gaps))
    assert rows["thm41_gap_median"] == pytest.approx(sorted(gaps)[n // 2])
    assert rows["thm42_holds"] == pytest.approx(sum(x >= -0.1 for x in gaps42) / n)
    exact = gap(r["rhs42_exact"], r["lhs42"], size42)
    assert rows["thm42_exact_holds"] == pytest.approx(sum(abs(x) <= 0.1 for x in exact) / n)
    assert rows["thm42_exact_gap_max"] == pytest.approx(max(abs(x) for x in exact))
    assert rows["thm42_eps_min"] == pytest.approx(min(gap(r["rhs42"], r["rhs42_exact"], size42)))
    failing = [i for i in range(n) if gaps42[i] < -0.1]
    assert failing and rows["thm42_explained"] == pytest.approx(sum(abs(exact[i]) <= 0.1 for i in failing) /
                                                                len(failing))
    assert rows["thm_corr_positive"] == pytest.approx(sum(float(c) > 0 for c in r["corr"]) / n)
    assert rows["thm42_hessian_nonneg"] == pytest.approx(sum(float(h) >= 0 for h in r["hessian_term"]) / n)
    shares = [float(r["corr_term"][i]) / float(r["first"][i]) if r["first"][i] > 0 else 0.0 for i in range(n)]
    assert rows["thm41_corr_share"] == pytest.approx(sorted(shares)[n // 2])


def test_a_run_logs_the_theorems_at_their_interval_and_trains_as_without(runs_dir):
    from runhelpers import metrics

    from bnlab.config import compose
    from bnlab.data.datasets import build_data
    from bnlab.models import build_model
    from bnlab.training.probe_schedule import theorem_rows
    from bnlab.training.runner import run

    plain, probed = metrics(run(compose(SMALL_DLN))), metrics(run(compose([*SMALL_DLN, *THEOREMS])))
    holds = probed[probed.metric == "thm41_holds"]
    assert sorted(set(holds.step)) == [0, 5, 10] and sorted(set(holds.layer)) == [1, 2]  # BatchNorm after layers 1, 2
    loss = probed[probed.metric == "loss"].reset_index(drop=True)
    assert loss.equals(plain[plain.metric == "loss"].reset_index(drop=True))  # the trajectory, bit for bit

    cfg = compose([*SMALL_DLN, *THEOREMS])  # step 0 again, by calling the probe on the initial model
    torch.manual_seed(cfg.seed)
    data = build_data(cfg, torch.device("cpu"), torch.float32)
    model = build_model(cfg)
    x, y = data.train_batch(0)
    result = probes.batchnorm_theorems(model, data.loss, x, y, units=None)
    for layer, (name, measured) in enumerate(result.items(), start=1):
        expected = theorem_rows(measured, cfg.probes.theorems.tolerance)
        logged = probed[(probed.step == 0) & (probed.layer == layer)].set_index("metric").value
        for metric in ("thm41_holds", "thm41_printed_holds", "thm41_gap_median", "thm41_corr_share", "thm41_scale"):
            assert logged[metric] == pytest.approx(expected[metric], rel=1e-5, abs=1e-9), (name, metric)


def test_the_theorem_probe_is_validated_and_left_out_of_identity_while_off():
    from bnlab.config import ConfigError, compose, identity, validate
    from bnlab.training.stacking import stack_key

    off, on = compose(SMALL_DLN), compose([*SMALL_DLN, *THEOREMS])
    assert "theorems" not in identity(off)["probes"] and identity(on)["probes"]["theorems"]["units"] == 2
    assert stack_key(off) is not None and stack_key(on) is None  # measured one run at a time
    for override, key in (("probes.theorems.units=0", "probes.theorems.units"),
                          ("probes.theorems.every=-1", "probes.theorems.every"),
                          ("probes.theorems.tolerance=2", "probes.theorems.tolerance"),
                          ("probes.theorems.enabled=maybe", "probes.theorems.enabled")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate(compose([*SMALL_DLN, *THEOREMS, override]))


def test_float64_script_separates_rounding_from_the_identity(capsys):
    """scripts/theorem_float64.py (docs/results.md's check of the runs' residual): on a 4-layer DLN's starting
    state the exact identity's gap is float32 rounding, so float64 shrinks it by many orders."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    import theorem_float64

    theorem_float64.main(["model=dln", "model.depth=4", "data.num_samples=200"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [r[0] for r in rows] == ["blocks.0.norm", "blocks.1.norm", "blocks.2.norm", "largest"]
    gap32, gap64 = float(rows[-1][1]), float(rows[-1][2])
    assert 0 < gap32 < 1e-4 and gap64 < 1e-12 and gap64 < gap32 * 1e-6
