"""Each normalization layer against its definition, computed independently (naive loops, torch.nn)."""

import math

import pytest
import torch
from torch import nn

from bnlab.norms import BatchNoise, BatchNorm, LpNorm, make_norm


def _inputs(shape):
    return torch.randn(*shape, dtype=torch.float64) * 3 + 1.5


@pytest.mark.parametrize("shape", [(64, 5), (8, 3, 4, 4)])
def test_batchnorm_matches_torch_batchnorm(shape):
    ours = BatchNorm(shape[1]).double()
    ref = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(shape[1]).double()
    with torch.no_grad():
        for layer in (ours, ref):
            layer.weight.copy_(torch.linspace(0.5, 2, shape[1]))
            layer.bias.copy_(torch.linspace(-1, 1, shape[1]))
    for _ in range(3):  # running statistics after several steps
        x = _inputs(shape).requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        y, y_ref = ours(x), ref(x_ref)
        torch.testing.assert_close(y, y_ref)
        (y * torch.arange(y.numel()).view_as(y)).sum().backward()
        (y_ref * torch.arange(y.numel()).view_as(y)).sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    x = _inputs(shape)
    torch.testing.assert_close(ours(x), ref(x))


def _naive_lp(x, p, center, eps, weight, bias):
    """Unit by unit, value by value, in plain Python floats."""
    out = torch.empty_like(x)
    channels = x.shape[1]
    for c in range(channels):
        values = x[:, c].reshape(-1).tolist()
        mean = sum(values) / len(values)
        base = [v - mean for v in values] if center else values
        if p == math.inf:
            norm = max(abs(v) for v in base)
        else:
            norm = (sum(abs(v) ** p for v in base) / len(base)) ** (1 / p)
        out[:, c] = (x[:, c] - mean) / (norm + eps) * weight[c] + bias[c]
    return out


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("shape", [(32, 4), (6, 3, 5, 5)])
def test_lp_norm_matches_direct_formula(p, center, shape):
    layer = LpNorm(shape[1], p, center_before_norm=center).double()
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(0.5, 2, shape[1]))
        layer.bias.copy_(torch.linspace(-1, 1, shape[1]))
    x = _inputs(shape)
    expected = _naive_lp(x, p, center, layer.eps, layer.weight.detach(), layer.bias.detach())
    torch.testing.assert_close(layer(x), expected)


def test_lp_norm_uncentered_differs_from_centered():
    x = _inputs((32, 4))
    a, b = LpNorm(4, 2.0, False).double(), LpNorm(4, 2.0, True).double()
    assert not torch.allclose(a(x), b(x))


def test_lp_norm_running_statistics_and_eval():
    layer = LpNorm(3, 1.0, momentum=0.1).double()
    batches = [_inputs((50, 3)) for _ in range(4)]
    mean, norm = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    for x in batches:
        layer(x)
        mean = 0.9 * mean + 0.1 * x.mean(0)
        norm = 0.9 * norm + 0.1 * x.abs().mean(0)
    torch.testing.assert_close(layer.running_mean, mean)
    torch.testing.assert_close(layer.running_norm, norm)
    layer.eval()
    x = _inputs((7, 3))
    torch.testing.assert_close(layer(x), (x - mean) / (norm + layer.eps))


def test_noise_statistics_per_unit_and_step():
    """a -> s * a + m with mu_j ~ U(-.5, .5), sigma_j ~ U(1, 1.25), m ~ U(mu +- .1), s ~ N(sigma, .1)."""
    noise = BatchNoise(n_mu=0.5, n_sigma=1.25, r_mu=0.1, r_sigma=0.1)
    units, batch = 400, 20000
    state = torch.random.get_rng_state()
    m = noise(torch.zeros(batch, units, dtype=torch.float64))  # = m
    torch.random.set_rng_state(state)
    s = noise(torch.ones(batch, units, dtype=torch.float64)) - m  # same draw: = s
    mu_j, sigma_j = m.mean(0), s.mean(0)
    assert mu_j.abs().max() <= 0.5 + 0.01 and mu_j.abs().max() > 0.45  # spans U(-0.5, 0.5)
    assert mu_j.std().item() == pytest.approx(1 / math.sqrt(3) * 0.5, rel=0.15)
    assert ((m.max(0).values - m.min(0).values) <= 0.2 + 1e-9).all()  # m_ij within mu_j +- r_mu
    assert (m - mu_j).std().item() == pytest.approx(0.1 / math.sqrt(3), rel=0.05)
    assert sigma_j.min() >= 1 - 0.01 and sigma_j.max() <= 1.25 + 0.01
    assert (s - sigma_j).std().item() == pytest.approx(0.1, rel=0.05)  # r_sigma is a standard deviation
    again = noise(torch.zeros(batch, units, dtype=torch.float64)).mean(0)
    assert (again - mu_j).abs().mean() > 0.1  # a fresh distribution at every step


def test_noise_conv_treats_spatial_positions_as_batch():
    noise = BatchNoise()
    m = noise(torch.zeros(64, 3, 8, 8))
    per_channel = m.transpose(0, 1).reshape(3, -1)
    spread = per_channel.max(1).values - per_channel.min(1).values
    assert (spread <= 0.2 + 1e-6).all()  # one mu_j per channel, shared by every position


def test_noise_keeps_a_channels_last_input_in_its_layout_with_the_same_values():
    """The noise is drawn in logical order, the same values whatever the input's layout, and the output
    keeps a channels-last input's layout (a mixed-layout product would come out contiguous)."""
    noise, x = BatchNoise(), torch.randn(6, 5, 4, 4)
    state = torch.random.get_rng_state()
    contiguous = noise(x)
    torch.random.set_rng_state(state)
    channels_last = noise(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(channels_last, contiguous)
    assert channels_last.is_contiguous(memory_format=torch.channels_last) and not channels_last.is_contiguous()
    assert contiguous.is_contiguous()
    # the same draws out of place, by hand
    torch.random.set_rng_state(state)
    mu = (torch.rand(5) * 2 - 1) * noise.n_mu
    sigma = 1 + torch.rand(5) * (noise.n_sigma - 1)
    m = mu.view(1, 5, 1, 1) + (torch.rand(x.shape) * 2 - 1) * noise.r_mu
    s = sigma.view(1, 5, 1, 1) + torch.randn(x.shape) * noise.r_sigma
    assert torch.equal(contiguous, s * x + m)


def test_noise_off_in_eval_mode_and_for_noisy_batchnorm():
    x = _inputs((16, 4)).float()
    layer = make_norm("batch", 4, noise=dict(n_mu=0.5, n_sigma=1.25, r_mu=0.1, r_sigma=0.1))
    clean = BatchNorm(4)
    assert not torch.allclose(layer(x), clean(x))
    layer.eval(), clean.eval()
    torch.testing.assert_close(layer(x), clean(x))


def test_make_norm_kinds():
    assert isinstance(make_norm("none", 4), nn.Identity)
    assert isinstance(make_norm("none", 4, noise=dict(n_mu=0.5, n_sigma=1.25, r_mu=0.1, r_sigma=0.1)), BatchNoise)
    assert make_norm("linf", 4).p == math.inf
    with pytest.raises(ValueError, match="norm.kind='weird'; allowed: none, batch"):
        make_norm("weird", 4)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, math.inf])
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("layout", ["features", "channels_last", "channels_last_folded", "stacked"])
def test_lp_norm_backward_written_out_is_autograds_at_first_and_second_order(p, center, layout):
    """The layer's own backward pass (bnlab.norms._LpNormalize) against autograd through the plain composition
    (lp_normalize), in float64: the gradients of the input, scale and shift; and a Hessian-vector product,
    which goes through the exact fallback."""
    from bnlab.norms import StackedLpNorm, lp_normalize

    g = torch.Generator().manual_seed(0)
    if layout == "stacked":
        layer = StackedLpNorm((2, 3), p, center).double()
        x = torch.randn(2, 3, 7, generator=g, dtype=torch.float64)
    else:
        layer = LpNorm(3, p, center).double()
        shape = {"features": (6, 3), "channels_last": (4, 3, 3, 3), "channels_last_folded": (8, 3, 4, 4)}[layout]
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        if layout.startswith("channels_last"):  # (8 x 4 x 4 = 128 positions: bnlab.norms._reduce folds them)
            x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5, generator=g)
        layer.bias.uniform_(-0.5, 0.5, generator=g)
    target = torch.randn(x.shape, generator=g, dtype=torch.float64)
    dims = layer._statistics_dims(x)

    def loss(module_output):
        return (torch.tanh(module_output) * target).sum()

    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = torch.autograd.grad(loss(layer(x1)), [x1, layer.weight, layer.bias])
    plain = lp_normalize(x2, layer.weight, layer.bias, p, center, layer.eps, dims)[0]
    expected = torch.autograd.grad(loss(plain), [x2, layer.weight, layer.bias])
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    for module in (layer, None):
        xi = x.clone().requires_grad_()
        out = layer(xi) if module is not None else lp_normalize(xi, layer.weight, layer.bias, p, center, layer.eps,
                                                               dims)[0]
        (first,) = torch.autograd.grad(loss(out), xi, create_graph=True)
        (hv,) = torch.autograd.grad(first, xi, v)
        if module is not None:
            ours_hv = hv
    torch.testing.assert_close(ours_hv, hv, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("center", [False, True])
def test_lp_norm_linf_shares_the_gradient_between_tied_maxima_as_autograd_does(center):
    from bnlab.norms import lp_normalize

    layer = LpNorm(2, math.inf, center).double()
    x = torch.tensor([[2.0, -3.0], [-2.0, 1.0], [2.0, 3.0], [0.5, -1.0]], dtype=torch.float64)  # |max| tied
    target = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    (ours,) = torch.autograd.grad((layer(x1) * target).sum(), x1)
    plain = lp_normalize(x2, layer.weight, layer.bias, math.inf, center, layer.eps, [0])[0]
    (expected,) = torch.autograd.grad((plain * target).sum(), x2)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-14)


def test_an_lp_layer_with_noise_draws_the_same_noise_in_either_layout():
    layer = make_norm("l2", 5, noise=dict(n_mu=0.5, n_sigma=1.25, r_mu=0.1, r_sigma=0.1))
    x = torch.randn(6, 5, 4, 4)
    state = torch.random.get_rng_state()
    contiguous = layer(x)
    torch.random.set_rng_state(state)
    channels_last = layer(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(channels_last, contiguous, rtol=1e-5, atol=1e-6)
    assert channels_last.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("shape", [(16, 10), (4, 12, 5, 5)])
@pytest.mark.parametrize("kind", ["layer", "group"])
def test_per_sample_normalizers_match_torch_in_float64(kind, shape):
    """LayerNorm is torch's LayerNorm over the units for (N, C) inputs and GroupNorm(1, C) for images;
    GroupNorm is torch's with 32 groups, or as many as divide the units; both in both modes (no batch
    statistics), with their gradients."""
    from bnlab.norms import groups_for

    channels = shape[1]
    torch.manual_seed(0)
    x = (torch.randn(*shape, dtype=torch.float64) * 3 + 1).requires_grad_()
    ours = make_norm(kind, channels).double()
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-0.5, 0.5)
    groups = 1 if kind == "layer" else groups_for(channels)
    if kind == "layer" and len(shape) == 2:
        reference = nn.LayerNorm(channels, eps=1e-5).double()
    else:
        reference = nn.GroupNorm(groups, channels, eps=1e-5).double()
    reference.load_state_dict({"weight": ours.weight.detach(), "bias": ours.bias.detach()})
    assert groups_for(10) == 2 and groups_for(64) == 32 and groups_for(8) == 8
    for mode in (True, False):
        ours.train(mode)
        reference.train(mode)
        got, want = ours(x), reference(x)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        g = torch.randn_like(got)
        torch.testing.assert_close(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0],
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["layer", "group"])
def test_per_sample_normalizers_build_into_both_models(kind):
    from bnlab.config import compose, validate
    from bnlab.models import build_model

    for overrides in (["model=dln", "scale=smoke"], ["model=vgg", "scale=smoke"]):
        cfg = compose([*overrides, f"norm={kind}"])
        validate(cfg)
        model = build_model(cfg)
        x = torch.randn(4, 10) if cfg.model.name == "dln" else torch.randn(4, 3, 32, 32)
        assert torch.isfinite(model(x)).all()


@pytest.mark.parametrize("model_name", ["vgg", "dln"])
def test_weight_norm_reparametrizes_every_normalized_layer_and_starts_as_the_standard_network(model_name):
    """norm=weight: each conv/linear layer a normalization would follow has weight g v / |v| per output unit
    (checked by hand in float64); the output layer (and the DLN's last map) stays plain; at initialization
    the network computes what the standard one does at the same seed (g starts at |v|, nothing else drawn)."""
    from bnlab.config import compose
    from bnlab.models import build_model

    def built(norm):
        torch.manual_seed(0)
        return build_model(compose([f"model={model_name}", "scale=smoke", f"norm={norm}"])).double()

    weighted, standard = built("weight"), built("none")
    layers = [m for m in weighted.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    reparametrized = [m for m in layers if hasattr(m, "parametrizations")]
    assert len(reparametrized) == len(layers) - 1 and not hasattr(layers[-1], "parametrizations")
    for layer in reparametrized:
        g = layer.parametrizations.weight.original0
        v = layer.parametrizations.weight.original1
        norms = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
        torch.testing.assert_close(layer.weight, g * v / norms)
    x = torch.randn(4, 10, dtype=torch.float64) if model_name == "dln" else torch.randn(4, 3, 32, 32).double()
    # equal to float32 rounding: g = |v| is computed when the float32 model is built
    torch.testing.assert_close(weighted.train()(x), standard.train()(x), rtol=1e-4, atol=1e-6)
    weighted(x).square().sum().backward()
    assert all(layer.parametrizations.weight.original0.grad is not None for layer in reparametrized)


@pytest.mark.parametrize("shape", [(16, 5), (8, 3, 4, 4)])
def test_population_batchnorm_normalizes_with_the_running_estimates_it_updates(shape):
    """norm.statistics=population (Ghorbani et al. 2019): in training mode the running estimates are updated
    with the batch's mean and unbiased variance (momentum 0.1, as torch), then the output is computed by hand in
    float64 from those estimates, held constant: its gradient is weight / sqrt(var + eps) per unit, with no
    term through the batch's statistics (a finite difference of the sum checks it). Evaluation mode is
    BatchNorm's."""
    torch.manual_seed(0)
    layer = make_norm("batch", shape[1], statistics="population").double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2), layer.bias.uniform_(-1, 1)
        layer.running_mean.uniform_(-1, 1), layer.running_var.uniform_(0.5, 2)
    x = (torch.randn(shape, dtype=torch.float64) * 3 + 1).requires_grad_()
    dims = [0, *range(2, len(shape))]
    count = math.prod(shape[d] for d in dims)
    mean0, var0 = layer.running_mean.clone(), layer.running_var.clone()
    y = layer.train()(x)
    batch_mean = x.detach().mean(dims)
    batch_var = x.detach().var(dims, unbiased=False) * count / (count - 1)
    mean, var = 0.9 * mean0 + 0.1 * batch_mean, 0.9 * var0 + 0.1 * batch_var
    torch.testing.assert_close(layer.running_mean, mean), torch.testing.assert_close(layer.running_var, var)

    def per_unit(v):
        return v.view(1, -1, *([1] * (len(shape) - 2)))

    expected = (x.detach() - per_unit(mean)) / torch.sqrt(per_unit(var) + layer.eps) * per_unit(layer.weight.detach()) \
        + per_unit(layer.bias.detach())
    torch.testing.assert_close(y, expected)
    (gradient,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(gradient, (per_unit(layer.weight.detach()) / torch.sqrt(per_unit(var) + layer.eps))
                               .expand(shape))
    # the gradient through batch statistics would make a unit's sum constant in x (BatchNorm's): not here
    plain = make_norm("batch", shape[1]).double().train()
    (through_batch,) = torch.autograd.grad(plain(x).sum(), x)
    assert through_batch.abs().max() < 1e-8 < gradient.abs().min()
    torch.testing.assert_close(layer.eval()(x), expected)  # evaluation leaves the estimates: the same output


def test_population_statistics_only_for_a_normalization_with_running_estimates():
    from bnlab.config import ConfigError, compose, validate

    with pytest.raises(ValueError, match="keeps no running statistics"):
        make_norm("layer", 4, statistics="population")
    with pytest.raises(ValueError, match="norm.statistics must be one of"):
        make_norm("batch", 4, statistics="moving")
    with pytest.raises(ConfigError, match="norm.statistics"):
        validate(compose(["model=dln", "scale=smoke", "norm=l2", "norm.statistics=population"]))
    cfg = compose(["model=vgg", "scale=smoke", "norm=batch_population"])
    validate(cfg)
    assert cfg.norm.kind == "batch" and cfg.norm.statistics == "population"


def test_population_statistics_stack_and_keep_the_old_run_keys():
    """A stacked DLN's population BatchNorm computes what each run's own does; the default (batch) leaves the
    keys of runs stored before norm.statistics existed as they were, and population runs are named so."""
    from omegaconf import OmegaConf

    from bnlab.config import compose, run_key
    from bnlab.models import build_model, model_family

    cfgs = [compose(["model=dln", "scale=smoke", "norm=batch_population", f"seed={s}"]) for s in (0, 1)]
    models = []
    for cfg in cfgs:
        torch.manual_seed(cfg.seed)
        models.append(build_model(cfg))
    stacked = model_family("dln").stack(models, cfgs[0])
    x = torch.randn(2, 10, 32)
    out = stacked.train()(x)
    for s, model in enumerate(models):
        torch.testing.assert_close(out[s], model.train()(x[s].T).T)
        torch.testing.assert_close(stacked.member_state_dict(s), model.state_dict())
    batch = compose(["model=dln", "scale=smoke", "norm=batch"])
    without = compose(["model=dln", "scale=smoke", "norm=batch"])
    OmegaConf.set_struct(without, False)
    without.norm.pop("statistics")
    assert run_key(batch) == run_key(without)
    assert "-batch+population-" in run_key(cfgs[0]) and run_key(cfgs[0]) != run_key(batch)


def test_population_estimates_started_from_the_first_batch():
    """population_start=first_batch: the first training batch's mean and unbiased variance become the estimates
    (then normalize it); later batches update them with momentum 0.1. Per unit in a stacked DLN too."""
    torch.manual_seed(1)
    layer = make_norm("batch", 3, statistics="population", population_start="first_batch").double().train()
    first, second = torch.randn(32, 3, dtype=torch.float64) * 4 + 2, torch.randn(32, 3, dtype=torch.float64)
    y = layer(first)
    torch.testing.assert_close(layer.running_mean, first.mean(0))
    torch.testing.assert_close(layer.running_var, first.var(0, unbiased=True))
    torch.testing.assert_close(y, (first - first.mean(0)) / torch.sqrt(first.var(0) + layer.eps))
    layer(second)
    torch.testing.assert_close(layer.running_mean, 0.9 * first.mean(0) + 0.1 * second.mean(0))
    torch.testing.assert_close(layer.running_var, 0.9 * first.var(0) + 0.1 * second.var(0))
    assert bool(layer.started.all()) and "started" in layer.state_dict()
    with pytest.raises(ValueError, match="population_start"):
        make_norm("batch", 3, statistics="population", population_start="warm")


def test_group_norm_groups_follow_the_config_and_the_scale():
    from bnlab.config import compose, run_key
    from bnlab.models import build_model

    assert make_norm("group", 64, groups=8).groups == 8 and make_norm("group", 12, groups=8).groups == 4
    assert make_norm("group", 64).groups == 32  # Wu & He's default
    smoke, paper = (compose(["model=vgg", f"scale={s}", "norm=group"]) for s in ("smoke", "paper"))
    assert (smoke.norm.groups, paper.norm.groups) == (8, 32)  # the calibration's choice at width 1/8
    assert {m.groups for m in build_model(smoke).modules() if hasattr(m, "groups") and hasattr(m, "eps")} == {8}
    assert compose(["model=dln", "scale=smoke", "norm=group"]).norm.groups == 32  # 2 groups of the DLN's 10
    # the scale's setting is carried by norm.groups alone: other runs keep their keys
    assert run_key(compose(["model=vgg", "scale=smoke", "norm=batch"])) == \
        run_key(compose(["model=vgg", "scale=smoke", "norm=batch", "scale.vgg.norm_groups=32"]))
