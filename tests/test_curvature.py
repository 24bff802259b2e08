"""The curvature probes against the dense Hessian (torch.autograd.functional.hessian over the flattened
parameters), on small models with and without BatchNorm, with batch statistics (train) and running
statistics (eval)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnlab import probes
from bnlab.models.dln import DeepLinearNet
from bnlab.models.dln_stack import StackedDLN
from bnlab.norms import make_norm, normalization


def small_model(norm: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(4, 6)]
    if norm == "torch_batch":
        layers.append(nn.BatchNorm1d(6))
    elif norm in ("batch", "noisy_batch"):
        noise = dict(n_mu=0.2, n_sigma=1.5, r_mu=0.05, r_sigma=0.1) if norm == "noisy_batch" else None
        layers.append(make_norm("batch", 6, noise=noise))
    elif norm == "batch_population":
        layers.append(make_norm("batch", 6, statistics="population"))
    elif norm in ("layer", "group"):
        layers.append(make_norm(norm, 6, groups=2))
    elif norm == "weight":
        layers[0] = normalization("weight").reparametrize(layers[0])
    layers += [nn.Tanh(), nn.Linear(6, 3)]
    model = nn.Sequential(*layers).double()
    with torch.no_grad():  # running statistics away from their initial values, so that eval mode differs
        for m in model.modules():
            if hasattr(m, "running_mean") and m.running_mean is not None:
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)


def dense(model, x, y, mode: str, draw_seed: int = 0, loss_fn=F.cross_entropy):
    """(Hessian, gradient) of the loss over the flattened parameters, on a copy of the model in `mode`."""
    model = copy.deepcopy(model).train(mode == "train")
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    buffers = {n: b.clone() for n, b in model.named_buffers()}

    def loss(v):
        params, offset = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            params[name] = v[offset:offset + shape.numel()].view(shape)
            offset += shape.numel()
        torch.manual_seed(draw_seed)  # the draw the probe replays (noisy BatchNorm)
        fresh = {n: b.clone() for n, b in buffers.items()}  # batch statistics update running ones in place
        return loss_fn(torch.func.functional_call(model, (params, fresh), (x,)), y)

    hessian = torch.autograd.functional.hessian(loss, flat)
    gradient = torch.autograd.functional.jacobian(loss, flat)
    return hessian, gradient


def state(model):
    return ([t.detach().clone() for t in model.parameters()], [b.clone() for b in model.buffers()],
            [m.training for m in model.modules()], torch.random.get_rng_state())


def assert_unchanged(before, after):
    for a, b in zip(before[0] + before[1], after[0] + after[1], strict=True):
        assert torch.equal(a, b)
    assert before[2] == after[2] and torch.equal(before[3], after[3])


@pytest.mark.parametrize("norm", ["none", "batch", "torch_batch", "noisy_batch", "batch_population", "layer", "group",
                                  "weight"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_top_eigenvalues_match_the_dense_hessian(norm, mode):
    model, (x, y) = small_model(norm), batch()
    torch.manual_seed(0)
    before = state(model)
    out = probes.hessian_eigenvalues(model, F.cross_entropy, x, y, k=3, mode=mode, iterations=200, tolerance=1e-10)
    assert_unchanged(before, state(model))  # parameters, running statistics, modes, random stream
    hessian, _ = dense(model, x, y, mode)
    expected = torch.linalg.eigvalsh(hessian).flip(0)[:3]
    assert out["eigenvalues"] == pytest.approx(expected.tolist(), rel=1e-7, abs=1e-10)
    assert out["converged"] and 3 <= out["hvps"] <= hessian.shape[0]
    assert out["eigenvalues"] == sorted(out["eigenvalues"], reverse=True)


def test_batch_statistics_and_running_statistics_are_different_functions():
    x, y = batch()
    for norm, differ in (("none", False), ("batch", True)):
        model = small_model(norm)
        train = probes.hessian_eigenvalues(model, F.cross_entropy, x, y, mode="train", tolerance=1e-10)
        evaluated = probes.hessian_eigenvalues(model, F.cross_entropy, x, y, mode="eval", tolerance=1e-10)
        same = train["eigenvalues"][0] == pytest.approx(evaluated["eigenvalues"][0], rel=1e-8)
        assert same != differ, norm


def test_the_model_is_left_in_the_mode_it_was_found():
    model, (x, y) = small_model("batch"), batch()
    model.eval()
    model[0].train()  # a mixed state, restored module by module
    before = state(model)
    probes.hessian_eigenvalues(model, F.cross_entropy, x, y, mode="train")
    probes.hessian_trace(model, F.cross_entropy, x, y, samples=3, mode="eval")
    assert_unchanged(before, state(model))


@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_hutchinson_samples_are_the_dense_quadratic_forms(norm, mode):
    model, (x, y) = small_model(norm), batch()
    out = probes.hessian_trace(model, F.cross_entropy, x, y, samples=5, mode=mode, seed=7)
    hessian, _ = dense(model, x, y, mode)
    g = torch.Generator().manual_seed(7)  # the same Rademacher vectors, drawn independently
    vectors = [torch.randint(0, 2, (hessian.shape[0],), generator=g).double() * 2 - 1 for _ in range(5)]
    assert out["samples"] == pytest.approx([float(v @ hessian @ v) for v in vectors], rel=1e-9, abs=1e-12)
    assert out["trace"] == pytest.approx(sum(out["samples"]) / 5, rel=1e-12)
    mean = out["trace"]
    assert out["stderr"] == pytest.approx((sum((s - mean) ** 2 for s in out["samples"]) / 4 / 5) ** 0.5)
    assert out["hvps"] == 5


def test_hutchinson_estimate_is_within_its_error_of_the_trace():
    model, (x, y) = small_model("batch"), batch()
    out = probes.hessian_trace(model, F.cross_entropy, x, y, samples=400, seed=3)
    exact = float(torch.trace(dense(model, x, y, "train")[0]))
    assert abs(out["trace"] - exact) < 4 * out["stderr"]
    assert out["stderr"] < 0.2 * abs(exact)  # and the error bar is not vacuous


@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("k", [1, 3])
def test_gradient_share_in_the_top_eigenspace_matches_the_dense_one(norm, k):
    model, (x, y) = small_model(norm), batch()
    out = probes.gradient_in_top_eigenspace(model, F.cross_entropy, x, y, k=k, iterations=200, tolerance=1e-12)
    hessian, gradient = dense(model, x, y, "train")
    _, vectors = torch.linalg.eigh(hessian)
    top = vectors[:, -k:]
    expected = float((top.T @ gradient).square().sum() / gradient.square().sum())
    assert out["fraction"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert 0 <= out["fraction"] <= 1


def test_an_invariant_krylov_space_restarts_rather_than_dividing_by_zero():
    # H = I: the first product returns the start vector, so the Krylov space is one-dimensional
    model = nn.Linear(2, 1, bias=False).double()
    x, y = torch.eye(2, dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64)
    out = probes.hessian_eigenvalues(model, F.mse_loss, x, y, k=2, iterations=10, tolerance=1e-10)
    assert out["eigenvalues"] == pytest.approx([1.0, 1.0]) and out["converged"] and out["hvps"] == 2


def test_a_low_iteration_limit_is_reported_as_not_converged():
    model, (x, y) = small_model("batch"), batch()
    out = probes.hessian_eigenvalues(model, F.cross_entropy, x, y, k=2, iterations=2, tolerance=1e-12)
    assert out["hvps"] == 2 and not out["converged"] and len(out["eigenvalues"]) == 2


def test_bad_arguments_and_stacked_models_are_refused():
    model, (x, y) = small_model("batch"), batch()
    with pytest.raises(ValueError, match="mode"):
        probes.hessian_eigenvalues(model, F.cross_entropy, x, y, mode="frozen")
    with pytest.raises(ValueError, match="k must"):
        probes.hessian_eigenvalues(model, F.cross_entropy, x, y, k=0)
    with pytest.raises(ValueError, match="iterations"):
        probes.hessian_eigenvalues(model, F.cross_entropy, x, y, k=3, iterations=2)
    with pytest.raises(ValueError, match="samples"):
        probes.hessian_trace(model, F.cross_entropy, x, y, samples=0)
    stacked = StackedDLN([DeepLinearNet(3, 2, "batch") for _ in range(2)], "batch", 0.1, 1e-5, False)
    with pytest.raises(ValueError, match="stacked"):
        probes.hessian_eigenvalues(stacked, lambda out, t: out.square().sum((1, 2)), torch.randn(2, 3, 8), None)


@pytest.mark.filterwarnings("ignore:Using backward")  # PyHessian calls backward(create_graph=True)
def test_eval_mode_top_eigenvalue_matches_pyhessian():
    """PyHessian (a dev dependency, used here only) measures the eval-mode function by power iteration."""
    from pyhessian import hessian as PyHessian

    model, (x, y) = small_model("torch_batch"), batch()
    model = model.float()
    x = x.float()
    ours = probes.hessian_eigenvalues(model, F.cross_entropy, x, y, k=1, mode="eval", tolerance=1e-6)
    torch.manual_seed(0)
    theirs, _ = PyHessian(copy.deepcopy(model), F.cross_entropy, data=(x, y), cuda=False).eigenvalues(
        maxIter=500, tol=1e-6, top_n=1)
    assert ours["eigenvalues"][0] == pytest.approx(theirs[0], rel=1e-3)
    train = probes.hessian_eigenvalues(model, F.cross_entropy, x, y, k=1, mode="train", tolerance=1e-6)
    assert train["eigenvalues"][0] != pytest.approx(theirs[0], rel=1e-2)  # what PyHessian does not measure


# ------------------------------------------------------------------------- in the training loop

SMALL_DLN = ["model=dln", "model.depth=3", "model.width=4", "norm=batch", "scale=smoke", "train.steps=12",
             "probes=none", "probes.activations.layers=[1]", "logger=none", "runtime.progress=false",
             "runtime.log_every=4"]
HESSIAN = ["probes.hessian.enabled=true", "probes.hessian.every=5", "probes.hessian.k=2",
           "probes.hessian.iterations=40", "probes.hessian.tolerance=1e-9", "probes.hessian.trace_samples=3"]


def test_a_run_logs_the_hessian_at_its_interval_and_trains_as_without(runs_dir):
    from runhelpers import metrics

    from bnlab.config import compose
    from bnlab.data.datasets import build_data
    from bnlab.models import build_model
    from bnlab.training.runner import run

    plain, probed = metrics(run(compose(SMALL_DLN))), metrics(run(compose([*SMALL_DLN, *HESSIAN])))
    for name in ("hessian_eig1_train", "hessian_eig2_eval", "hessian_trace_train", "hessian_trace_stderr_eval"):
        assert probed[probed.metric == name].step.tolist() == [0, 5, 10], name
    eig = {k: probed[probed.metric == f"hessian_eig{k}_train"].value.to_numpy() for k in (1, 2)}
    assert (eig[1] >= eig[2]).all()
    loss = probed[probed.metric == "loss"].reset_index(drop=True)
    assert loss.equals(plain[plain.metric == "loss"].reset_index(drop=True))  # the trajectory, bit for bit

    # step 0, recomputed independently: the dense Hessian of the step's loss at initialization
    cfg = compose([*SMALL_DLN, *HESSIAN])
    torch.manual_seed(cfg.seed)
    data = build_data(cfg, torch.device("cpu"), torch.float32)
    model = build_model(cfg).double()
    x, y = (t.double() for t in data.train_batch(0))
    for mode in ("train", "eval"):
        expected = torch.linalg.eigvalsh(dense(model, x, y, mode, loss_fn=data.loss)[0]).flip(0)[:2]
        logged = [probed[(probed.metric == f"hessian_eig{k}_{mode}") & (probed.step == 0)].value.item() for k in (1, 2)]
        assert logged == pytest.approx(expected.tolist(), rel=1e-4), mode


def test_the_hessian_probe_is_validated_and_left_out_of_identity_while_off():
    from bnlab.config import ConfigError, compose, identity, validate
    from bnlab.training.stacking import stack_key

    off = compose(SMALL_DLN)
    assert "hessian" not in identity(off)["probes"]  # runs stored before the probe existed keep their keys
    on = compose([*SMALL_DLN, *HESSIAN])
    assert identity(on)["probes"]["hessian"]["k"] == 2
    assert stack_key(off) is not None and stack_key(on) is None  # measured one run at a time
    for override, key in (("probes.hessian.modes=[train,frozen]", "probes.hessian.modes"),
                          ("probes.hessian.modes=[]", "probes.hessian.modes"),
                          ("probes.hessian.k=0", "probes.hessian.k"),
                          ("probes.hessian.iterations=1", "probes.hessian.iterations"),
                          ("probes.hessian.every=0", "probes.hessian.every"),
                          ("probes.hessian.trace_samples=-1", "probes.hessian.trace_samples")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate(compose([*SMALL_DLN, *HESSIAN, override]))


def test_a_network_whose_modes_compute_one_function_is_measured_in_one(runs_dir):
    """Without running statistics, noise or dropout, eval mode is the same function: its Hessian is measured
    once (train mode), not twice."""
    from runhelpers import metrics
    from torch import nn

    from bnlab.config import compose
    from bnlab.norms import make_norm
    from bnlab.training.runner import run

    standard = metrics(run(compose([*SMALL_DLN, "norm=none", *HESSIAN])))
    assert (standard.metric == "hessian_eig1_train").sum() == 3 and not standard.metric.str.endswith("_eval").any()
    assert not probes.modes_differ(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    for layer in (make_norm("batch", 2), make_norm("l1", 2), nn.Dropout(0.1), nn.BatchNorm1d(2),
                  make_norm("none", 2, noise=dict(n_mu=0.5, n_sigma=1.25, r_mu=0.1, r_sigma=0.1))):
        assert probes.modes_differ(nn.Sequential(nn.Linear(2, 2), layer)), layer


@pytest.mark.parametrize("norm", ["none", "batch", "noisy_batch"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_spectrum_matches_the_dense_hessian(norm, mode):
    """With as many Lanczos steps as parameters the quadrature is exact for each start: every Ritz value of
    positive weight is an eigenvalue of the dense Hessian, each run's n sum w theta^k is Hutchinson's v^T H^k v
    for its start, and the estimates of tr(H) and sum lambda^2 fall within 4 standard errors of the dense ones."""
    model, (x, y) = small_model(norm), batch()
    torch.manual_seed(0)
    before = state(model)
    n = sum(p.numel() for p in model.parameters())
    out = probes.hessian_spectrum(model, F.cross_entropy, x, y, mode=mode, iterations=n, runs=40, seed=3)
    assert_unchanged(before, state(model))
    hessian, _ = dense(model, x, y, mode)
    eigenvalues = torch.linalg.eigvalsh(hessian)
    for ritz, weights in zip(out["ritz_values"], out["weights"], strict=True):
        assert sum(weights) == pytest.approx(1.0, abs=1e-10)
        for theta, w in zip(ritz, weights, strict=True):
            if w > 1e-8:
                assert (eigenvalues - theta).abs().min() < 1e-6 * eigenvalues.abs().max()
    trace, squares = float(eigenvalues.sum()), float(eigenvalues.square().sum())
    assert abs(out["trace"] - trace) < 4 * out["trace_stderr"]
    assert abs(out["square_sum"] - squares) < 4 * out["square_sum_stderr"]
    # each run's estimate is Hutchinson's with its own start vector, drawn as the probe draws it
    g = torch.Generator().manual_seed(3)
    for ritz, weights in zip(out["ritz_values"][:5], out["weights"][:5], strict=True):
        v = torch.randint(0, 2, (n,), generator=g, dtype=torch.int64).double() * 2 - 1
        assert n * sum(w * t for w, t in zip(weights, ritz, strict=True)) == pytest.approx(
            float(v @ hessian @ v), rel=1e-8, abs=1e-10)
        assert n * sum(w * t * t for w, t in zip(weights, ritz, strict=True)) == pytest.approx(
            float(v @ hessian @ hessian @ v), rel=1e-8, abs=1e-10)


def test_spectrum_density_is_a_smoothed_ritz_measure():
    """The density integrates to 1 on its grid, its mean is the quadrature's mean eigenvalue (trace / n) up to
    the grid's resolution, and with few Lanczos steps it still spans the extreme eigenvalues, which Lanczos
    finds first (the outliers of Ghorbani et al.)."""
    model, (x, y) = small_model("batch"), batch()
    n = sum(p.numel() for p in model.parameters())
    out = probes.hessian_spectrum(model, F.cross_entropy, x, y, iterations=12, runs=3, grid_points=4000)
    grid, density = out["grid"], out["density"]
    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-9)
    mean = torch.trapezoid(grid * density, grid).item()
    assert mean == pytest.approx(out["trace"] / n, abs=1e-3 * float(grid[-1] - grid[0]))
    eigenvalues = torch.linalg.eigvalsh(dense(model, x, y, "train")[0])
    top = max(max(r) for r in out["ritz_values"])
    assert top == pytest.approx(float(eigenvalues[-1]), rel=1e-4)
    assert grid[0] < eigenvalues[0] + 0.05 * (eigenvalues[-1] - eigenvalues[0])
    assert out["hvps"] == 3 * 12 and len(out["ritz_values"][0]) == 12


def test_spectrum_refuses_bad_arguments():
    model, (x, y) = small_model("none"), batch()
    for kwargs in ({"iterations": 0}, {"runs": 1.5}, {"grid_points": 1}, {"sigma": 0.0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            probes.hessian_spectrum(model, F.cross_entropy, x, y, **kwargs)


@pytest.mark.filterwarnings("ignore:Using backward")  # PyHessian calls backward(create_graph=True)
def test_eval_mode_spectrum_matches_pyhessians_density(monkeypatch):
    """PyHessian's density() (SLQ, eval mode): with as many Lanczos steps as parameters both quadratures span
    the whole spectrum, so their extreme Ritz values are the Hessian's extreme eigenvalues. PyHessian 0.1 calls
    torch.eig, gone from torch since 1.9: it gets the same decomposition of its symmetric matrix through eigh."""
    from pyhessian import hessian as PyHessian

    from bnlab.probes.curvature import legacy_eig

    monkeypatch.setattr(torch, "eig", legacy_eig, raising=False)

    model, (x, y) = small_model("torch_batch"), batch()
    model, x = model.float(), x.float()
    n = sum(p.numel() for p in model.parameters())
    ours = probes.hessian_spectrum(model, F.cross_entropy, x, y, mode="eval", iterations=n, runs=2)
    torch.manual_seed(0)
    values, weights = PyHessian(copy.deepcopy(model), F.cross_entropy, data=(x, y), cuda=False).density(iter=n, n_v=1)
    values, weights = [float(v) for v in values[0]], [float(w) for w in weights[0]]
    assert sum(weights) == pytest.approx(1.0, abs=1e-4)
    for ritz in ours["ritz_values"]:
        assert max(ritz) == pytest.approx(max(values), rel=1e-3)
        assert min(ritz) == pytest.approx(min(values), abs=1e-3 * max(values))


SPECTRUM = ["probes.spectrum.enabled=true", "probes.spectrum.at=[0,0.5,1.0]", "probes.spectrum.iterations=6",
            "probes.spectrum.runs=2"]


def test_a_run_logs_the_spectrum_at_its_steps_and_trains_as_without(runs_dir):
    """The spectrum probe measures at round(f x steps) (1.0: the last step), in both modes, logs each Lanczos
    run's Ritz values and weights (each run's weights summing to 1) and what they estimate, and leaves the
    trajectory bit for bit. At step 0 its quadrature is hessian_spectrum's on the step's batch at initialization,
    recomputed independently (which test_spectrum_matches_the_dense_hessian checks against the dense Hessian)."""
    from runhelpers import metrics

    from bnlab.config import compose
    from bnlab.data.datasets import build_data
    from bnlab.models import build_model
    from bnlab.training.runner import run

    plain, probed = metrics(run(compose(SMALL_DLN))), metrics(run(compose([*SMALL_DLN, *SPECTRUM])))
    loss = probed[probed.metric == "loss"].reset_index(drop=True)
    assert loss.equals(plain[plain.metric == "loss"].reset_index(drop=True))
    for mode in ("train", "eval"):
        nodes = probed[probed.metric.str.startswith(f"spectrum_node_{mode}#u")]
        weights = probed[probed.metric.str.startswith(f"spectrum_weight_{mode}#u")]
        assert sorted(nodes.step.unique()) == [0, 6, 11] and len(nodes) == 3 * 2 * 6
        for step in (0, 6, 11):
            w = weights[weights.step == step].set_index("metric").value
            per_run = [w[[f"spectrum_weight_{mode}#u{k}" for k in range(r * 6, r * 6 + 6)]].sum() for r in (0, 1)]
            assert per_run == pytest.approx([1.0, 1.0], abs=1e-9)
        assert set(probed[probed.metric == f"spectrum_hvps_{mode}"].value) == {12}

    cfg = compose([*SMALL_DLN, *SPECTRUM])
    torch.manual_seed(cfg.seed)
    data = build_data(cfg, torch.device("cpu"), torch.float32)
    model = build_model(cfg)
    x, y = data.train_batch(0)
    for mode in ("train", "eval"):
        expected = probes.hessian_spectrum(model, data.loss, x, y, mode, 6, 2, seed=1_000_003 * cfg.seed + 2)
        logged = probed[(probed.step == 0) & probed.metric.str.startswith(f"spectrum_node_{mode}#u")]
        order = logged.metric.str.split("#u").str[1].astype(int).argsort()
        assert logged.value.to_numpy()[order] == pytest.approx(sum(expected["ritz_values"], []), rel=1e-5, abs=1e-6)
        trace = probed[(probed.step == 0) & (probed.metric == f"spectrum_trace_{mode}")].value.item()
        assert trace == pytest.approx(expected["trace"], rel=1e-5)


def test_the_spectrum_probe_is_validated_off_the_identity_while_off_and_plans_its_products():
    from bnlab.config import ConfigError, compose, identity, validate
    from bnlab.launch.costs import hessian_vector_products, step_kinds
    from bnlab.training.stacking import stack_key

    off, on = compose(SMALL_DLN), compose([*SMALL_DLN, *SPECTRUM])
    assert "spectrum" not in identity(off)["probes"] and identity(on)["probes"]["spectrum"]["runs"] == 2
    assert stack_key(on) is None  # measured one run at a time
    assert step_kinds(on)["spectrum"] == 3 and hessian_vector_products(on)["spectrum"] == 2 * 6 * 2
    assert step_kinds(on)["probe"] == 0  # no probe measured at probes.every: those steps are plain
    for override, key in (("probes.spectrum.at=[1.5]", "probes.spectrum.at"),
                          ("probes.spectrum.at=[]", "probes.spectrum.at"),
                          ("probes.spectrum.modes=[frozen]", "probes.spectrum.modes"),
                          ("probes.spectrum.iterations=0", "probes.spectrum.iterations"),
                          ("probes.spectrum.runs=true", "probes.spectrum.runs")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate(compose([*SMALL_DLN, *SPECTRUM, override]))


def test_spectral_density_of_a_quadrature_by_hand():
    """Two Lanczos runs' nodes and weights: the density is the runs' mean of Gaussian bumps, written out here."""
    ritz, weights = [[-1.0, 2.0], [0.5, 3.0]], [[0.25, 0.75], [0.5, 0.5]]
    grid = torch.linspace(-4, 7, 2001, dtype=torch.float64)
    got, density, sigma = probes.spectral_density(ritz, weights, sigma=0.3, grid=grid)

    def bump(t):
        return torch.exp(-0.5 * ((grid - t) / 0.3) ** 2) / (0.3 * math.sqrt(2 * math.pi))

    expected = (0.25 * bump(-1) + 0.75 * bump(2) + 0.5 * bump(0.5) + 0.5 * bump(3)) / 2
    torch.testing.assert_close(density, expected / torch.trapezoid(expected, grid))
    assert sigma == 0.3 and got is grid
    assert probes.spectral_density(ritz, weights)[2] == pytest.approx(0.01 * 4.0)  # 1% of the range by default


def test_weight_norm_hessian_matches_the_function_written_by_hand():
    """WeightNorm's Hessian against the network written out by hand, W = g v / |v| per row (torch's fused
    torch._weight_norm, which bnlab does not use, gives wrong second derivatives here)."""
    model, (x, y) = small_model("weight"), batch()
    params = list(model.parameters())  # 0.bias, g, v, 2.weight, 2.bias
    shapes = [p.shape for p in params]

    def loss(flat):
        parts, offset = [], 0
        for shape in shapes:
            parts.append(flat[offset:offset + shape.numel()].view(shape))
            offset += shape.numel()
        bias, g, v, weight2, bias2 = parts
        weight = g * v / v.norm(dim=1, keepdim=True)
        return F.cross_entropy(torch.tanh(x @ weight.T + bias) @ weight2.T + bias2, y)

    hessian = torch.autograd.functional.hessian(loss, torch.cat([p.detach().reshape(-1) for p in params]))
    out = probes.hessian_eigenvalues(model, F.cross_entropy, x, y, k=3, iterations=200, tolerance=1e-10)
    assert out["eigenvalues"] == pytest.approx(torch.linalg.eigvalsh(hessian).flip(0)[:3].tolist(), rel=1e-7)


@pytest.mark.parametrize("statistics", ["batch", "population"])
def test_batchnorm_hessian_matches_the_function_written_by_hand(statistics):
    """The batch-statistics Hessian against BatchNorm written out by hand (mean, biased variance, eps), not
    through torch's batch_norm kernel and its double backward; with population statistics the estimates after
    the step's update are constants of the function."""
    model, (x, y) = small_model("batch" if statistics == "batch" else "batch_population"), batch()
    norm = model[1]
    params = list(model.parameters())  # 0.weight, 0.bias, 1.weight (gamma), 1.bias (beta), 3.weight, 3.bias
    shapes = [p.shape for p in params]
    h = x @ params[0].detach().T + params[1].detach()
    var, mean = torch.var_mean(h, 0, correction=1)
    frozen_mean = 0.9 * norm.running_mean + 0.1 * mean  # the population arm's estimates after this batch
    frozen_var = 0.9 * norm.running_var + 0.1 * var

    def loss(flat):
        parts, offset = [], 0
        for shape in shapes:
            parts.append(flat[offset:offset + shape.numel()].view(shape))
            offset += shape.numel()
        weight, bias, gamma, beta, weight2, bias2 = parts
        pre = x @ weight.T + bias
        if statistics == "batch":
            mu, sigma2 = pre.mean(0), ((pre - pre.mean(0)) ** 2).mean(0)
        else:
            mu, sigma2 = frozen_mean, frozen_var
        out = (pre - mu) / torch.sqrt(sigma2 + norm.eps) * gamma + beta
        return F.cross_entropy(torch.tanh(out) @ weight2.T + bias2, y)

    hessian = torch.autograd.functional.hessian(loss, torch.cat([p.detach().reshape(-1) for p in params]))
    out = probes.hessian_eigenvalues(model, F.cross_entropy, x, y, k=3, iterations=200, tolerance=1e-10)
    assert out["eigenvalues"] == pytest.approx(torch.linalg.eigvalsh(hessian).flip(0)[:3].tolist(), rel=1e-7)
