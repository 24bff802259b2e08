"""Probes against independent naive computations: a fresh model copy per evaluation, plain .backward(),
and for ICS a 3-layer linear network whose gradients are worked out by hand."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnlab import probes
from bnlab.norms import BatchNorm, make_norm

NOISE = dict(n_mu=0.5, n_sigma=1.25, r_mu=0.1, r_sigma=0.1)


def mlp(norm: str):
    layers = [nn.Linear(6, 8)]
    if norm == "bn":
        layers += [BatchNorm(8), nn.ReLU(), nn.Linear(8, 8), nn.BatchNorm1d(8)]
    else:
        layers += [nn.ReLU(), nn.Linear(8, 8)]
    layers += [nn.ReLU(), nn.Linear(8, 3)]
    return nn.Sequential(*layers).double()


def convnet():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, bias=False), BatchNorm(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3)).double()


def cross_entropy(outputs, targets):
    return F.cross_entropy(outputs, targets)


def batch_for(model):
    if isinstance(model[0], nn.Conv2d):
        return torch.randn(10, 3, 6, 6, dtype=torch.float64), torch.randint(0, 3, (10,))
    return torch.randn(16, 6, dtype=torch.float64), torch.randint(0, 3, (16,))


def sgd_update(model, x, y, lr=0.5):
    """theta_{t+1} after one real SGD step on a copy."""
    twin = copy.deepcopy(model)
    cross_entropy(twin(x), y).backward()
    return {n: (p - lr * p.grad).detach() for n, p in twin.named_parameters()}


def naive_grad(model, params: dict, x, y, name):
    twin = copy.deepcopy(model)
    twin.load_state_dict({**twin.state_dict(), **params})
    twin.train()
    cross_entropy(twin(x), y).backward()
    return twin.get_submodule(name).weight.grad


def naive_ics(model, x, y, updated):
    names = [n for n, _ in model.named_parameters()]
    current = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = {}
    for layer, _ in probes.numbered_layers(model):
        weight = f"{layer}.weight"
        before = names[:names.index(weight)]
        mixed = {n: (updated[n] if n in before else current[n]) for n in names}
        g, g_mixed = naive_grad(model, current, x, y, layer), naive_grad(model, mixed, x, y, layer)
        result[layer] = {"l2": (g - g_mixed).norm().item(),
                         "cos": F.cosine_similarity(g.flatten(), g_mixed.flatten(), dim=0).item()}
    return result


@pytest.mark.parametrize("make", [lambda: mlp("none"), lambda: mlp("bn"), convnet], ids=["mlp", "mlp-bn", "conv-bn"])
def test_ics_matches_naive_recomputation(make):
    model = make()
    x, y = batch_for(model)
    updated = sgd_update(model, x, y)
    got = probes.ics(model, cross_entropy, x, y, updated)
    want = naive_ics(model, x, y, updated)
    assert list(got) == list(want)  # forward order
    for layer in want:
        assert got[layer]["l2"] == pytest.approx(want[layer]["l2"], rel=1e-9, abs=1e-12)
        assert got[layer]["cos"] == pytest.approx(want[layer]["cos"], rel=1e-9)
    assert any(v["l2"] > 1e-6 for v in got.values())  # the test would notice a probe returning zeros


def test_ics_under_weight_norm_takes_the_direction_as_the_layers_weight():
    """Under torch's WeightNorm (W = g v / |v|) the layer's W is its direction v; the parameters before the
    layer (every earlier layer's g, v and bias) take their step, the layer's own (its bias, registered before
    the parametrization, and g) do not. Checked against a recomputation on copies."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    for i in (0, 2):
        nn.utils.parametrizations.weight_norm(model[i])
    x, y = batch_for(model)
    updated = sgd_update(model, x, y)
    got = probes.ics(model, cross_entropy, x, y, updated)
    names = [n for n, _ in model.named_parameters()]
    current = {n: p.detach().clone() for n, p in model.named_parameters()}

    def grad_of_v(params, layer):
        twin = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in twin.named_parameters():
                p.copy_(params[n])
        cross_entropy(twin(x), y).backward()
        return twin.get_submodule(layer).parametrizations.weight.original1.grad

    for layer in ("2",):
        before = names[:min(names.index(n) for n in names if n.startswith(f"{layer}."))]  # its bias comes first
        mixed = {n: (updated[n] if n in before else current[n]) for n in names}
        g, g_mixed = grad_of_v(current, layer), grad_of_v(mixed, layer)
        assert got[layer]["l2"] == pytest.approx((g - g_mixed).norm().item(), rel=1e-9)
        assert got[layer]["cos"] == pytest.approx(
            F.cosine_similarity(g.flatten(), g_mixed.flatten(), dim=0).item(), rel=1e-9)
    assert got["0"]["l2"] == 0.0 and got["2"]["l2"] > 0 and list(got) == ["0", "2", "4"]


def test_ics_three_layer_linear_network_by_hand():
    """L = ||W3 W2 W1 X - Y||_F^2 with R = 2 (W3 W2 W1 X - Y):
    dL/dW1 = (W3 W2)^T R X^T, dL/dW2 = W3^T R (W1 X)^T, dL/dW3 = R (W2 W1 X)^T."""
    torch.manual_seed(3)
    model = nn.Sequential(*[nn.Linear(4, 4, bias=False) for _ in range(3)]).double()
    x = torch.randn(20, 4, dtype=torch.float64)
    y = torch.randn(20, 4, dtype=torch.float64)
    X, Y = x.T, y.T
    W = [m.weight.detach().clone() for m in model]
    Wn = [w + 0.1 * torch.randn_like(w) for w in W]  # any theta_{t+1}
    updated = {f"{i}.weight": Wn[i] for i in range(3)}

    def grads(W1, W2, W3):
        R = 2 * (W3 @ W2 @ W1 @ X - Y)
        return (W3 @ W2).T @ R @ X.T, W3.T @ R @ (W1 @ X).T, R @ (W2 @ W1 @ X).T

    G = grads(*W)
    G_mixed = [G[0], grads(Wn[0], W[1], W[2])[1], grads(Wn[0], Wn[1], W[2])[2]]
    got = probes.ics(model, lambda out, t: (out - t).square().sum(), x, y, updated)
    for i, name in enumerate(["0", "1", "2"]):
        diff = G[i] - G_mixed[i]
        cos = (G[i] * G_mixed[i]).sum() / (G[i].norm() * G_mixed[i].norm())
        assert got[name]["l2"] == pytest.approx(diff.norm().item(), rel=1e-10, abs=1e-12)
        assert got[name]["cos"] == pytest.approx(cos.item(), rel=1e-10)
    assert got["0"]["l2"] == 0.0 and got["1"]["l2"] > 0 and got["2"]["l2"] > 0


def test_ics_subset_and_errors():
    model = mlp("bn")
    x, y = batch_for(model)
    updated = sgd_update(model, x, y)
    full = probes.ics(model, cross_entropy, x, y, updated)
    part = probes.ics(model, cross_entropy, x, y, updated, layers=["3"])
    assert list(part) == ["3"] and part["3"] == pytest.approx(full["3"])
    with pytest.raises(KeyError, match="unknown layer"):
        probes.ics(model, cross_entropy, x, y, updated, layers=["7"])
    with pytest.raises(KeyError, match="lacks parameters"):
        probes.ics(model, cross_entropy, x, y, {"0.weight": updated["0.weight"]})


def naive_landscape(model, x, y, lr, multipliers):
    twin = copy.deepcopy(model)
    cross_entropy(twin(x), y).backward()
    g = [p.grad.clone() for p in twin.parameters()]
    theta = [p.detach().clone() for p in twin.parameters()]
    losses, diffs, betas = [], [], []
    for m in multipliers:
        point = copy.deepcopy(model)
        with torch.no_grad():
            for p, t, gi in zip(point.parameters(), theta, g, strict=True):
                p.copy_(t - m * lr * gi)
        loss = cross_entropy(point(x), y)
        loss.backward()
        d = torch.sqrt(sum(((p.grad - gi) ** 2).sum() for p, gi in zip(point.parameters(), g, strict=True)))
        step = m * lr * torch.sqrt(sum((gi ** 2).sum() for gi in g))
        losses.append(loss.item()), diffs.append(d.item()), betas.append((d / step).item())
    return losses, diffs, max(betas)


@pytest.mark.parametrize("make", [lambda: mlp("none"), lambda: mlp("bn"), convnet], ids=["mlp", "mlp-bn", "conv-bn"])
def test_landscape_matches_naive_loop(make):
    model = make()
    x, y = batch_for(model)
    multipliers = probes.landscape_multipliers(0.5, 4, 8, "linear")
    got = probes.landscape(model, cross_entropy, x, y, 0.1, multipliers)
    losses, diffs, beta = naive_landscape(model, x, y, 0.1, multipliers)
    assert got["multipliers"] == multipliers
    assert got["loss"] == pytest.approx(losses, rel=1e-9)
    assert got["grad_diff"] == pytest.approx(diffs, rel=1e-9)
    assert got["beta"] == pytest.approx(beta, rel=1e-9)


def test_landscape_small_steps_follow_first_order_taylor():
    """loss(theta - eps g) = loss - eps ||g||^2 + O(eps^2): checks direction, sign and scale of the step."""
    model = mlp("bn")
    x, y = batch_for(model)
    twin = copy.deepcopy(model)
    loss0 = cross_entropy(twin(x), y)
    loss0.backward()
    g2 = sum((p.grad ** 2).sum() for p in twin.parameters()).item()
    lr, m = 1e-6, 1.0
    got = probes.landscape(model, cross_entropy, x, y, lr, [m])
    assert (loss0.item() - got["loss"][0]) / (m * lr * g2) == pytest.approx(1.0, rel=1e-4)


def test_landscape_random_direction_has_gradient_norm():
    model = mlp("none")
    x, y = batch_for(model)
    gen = torch.Generator().manual_seed(0)
    got = probes.landscape(model, cross_entropy, x, y, 0.1, [1.0], direction="random", generator=gen)
    along = probes.landscape(model, cross_entropy, x, y, 0.1, [1.0])
    assert got["loss"][0] != pytest.approx(along["loss"][0])
    # beta * distance = d, with the same distance m * lr * ||g|| for both directions
    assert got["grad_diff"][0] / got["beta"] == pytest.approx(along["grad_diff"][0] / along["beta"], rel=1e-9)


def noisy_net():
    return nn.Sequential(nn.Linear(6, 8), make_norm("batch", 8, noise=NOISE), nn.ReLU(),
                         nn.Linear(8, 8, bias=False), make_norm("none", 8, noise=NOISE), nn.ReLU(),
                         nn.Linear(8, 3)).double()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_probes_leave_model_and_random_stream_untouched():
    model = noisy_net()
    model[1].momentum = 0.5
    model.eval()
    model[1].train()  # a mixed mode must survive too
    x, y = batch_for(model)
    before = _state(model)
    modes = [m.training for m in model.modules()]
    updated = sgd_update(model, x, y)
    rng = torch.random.get_rng_state()
    probes.ics(model, cross_entropy, x, y, updated)
    probes.landscape(model, cross_entropy, x, y, 0.1, [0.5, 1.0])
    probes.activation_stats(model, x, {1: "1"}, {1: torch.tensor([0, 3])})
    probes.bn_input_sigma(model, x)
    assert torch.equal(torch.random.get_rng_state(), rng)
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in model.modules()] == modes


def test_probes_replay_one_random_draw():
    """With theta_{t+1} = theta_t, G' must equal G exactly, which needs the same noise in every pass."""
    model = noisy_net()
    x, y = batch_for(model)
    same = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = probes.ics(model, cross_entropy, x, y, same)
    assert all(v["l2"] == 0.0 for v in result.values())
    land = probes.landscape(model, cross_entropy, x, y, 0.1, [1e-12])
    assert land["grad_diff"][0] < 1e-9


def test_activation_stats_match_direct_computation():
    model = convnet()
    x, _ = batch_for(model)
    units = {2: torch.tensor([1, 3])}
    q = (0.1, 0.5, 0.9)
    got = probes.activation_stats(model, x, {2: "4"}, units, q)[2]
    twin = copy.deepcopy(model).train()
    act = twin[4](twin[3](twin[2](twin[1](twin[0](x)))))  # output of the second normalization layer
    for row, unit in enumerate([1, 3]):
        values = act[:, unit].flatten().detach()
        assert got["mean"][row].item() == pytest.approx(values.mean().item(), rel=1e-12)
        assert got["var"][row].item() == pytest.approx(values.var(unbiased=False).item(), rel=1e-12)
        ordered = values.sort().values
        for col, level in enumerate(q):
            pos = level * (len(ordered) - 1)  # linear interpolation between order statistics
            lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
            want = ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo])
            assert got["quantiles"][row, col].item() == pytest.approx(want.item(), rel=1e-12)


def test_bn_input_sigma_is_batch_std_of_the_input():
    model = convnet()
    x, _ = batch_for(model)
    got = probes.bn_input_sigma(model, x)
    assert list(got) == ["1", "4"]
    pre = copy.deepcopy(model)[0](x)
    want = pre.transpose(0, 1).reshape(4, -1).std(1, unbiased=False)
    torch.testing.assert_close(got["1"], want.double())


def test_sample_units_fixed_by_generator():
    model = mlp("bn")
    a = probes.sample_units(model, {1: "1", 2: "4"}, 3, torch.Generator().manual_seed(5))
    b = probes.sample_units(model, {1: "1", 2: "4"}, 3, torch.Generator().manual_seed(5))
    assert all(torch.equal(a[k], b[k]) for k in a) and all(len(v) == 3 and v.max() < 8 for v in a.values())
