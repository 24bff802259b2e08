"""The deep linear network and its data, against direct computations."""

import math

import pytest
import torch
from torch import nn

from bnlab import probes
from bnlab.config import compose, identity
from bnlab.data.datasets import GaussianRegression
from bnlab.models import build_model
from bnlab.models.dln_stack import StackedDLN
from bnlab.norms import BatchNorm, LpNorm


def test_structure_and_layer_numbering():
    model = build_model(compose(["norm=batch"]))
    layers = probes.numbered_layers(model)
    assert len(layers) == 25 and all(m.weight.shape == (10, 10) and m.bias is None for _, m in layers)
    norms = [b.norm for b in model.blocks]
    assert all(isinstance(n, BatchNorm) for n in norms[:24]) and isinstance(norms[24], nn.Identity)
    names = [n for n, _ in model.named_parameters()]
    assert names[:4] == ["blocks.0.linear.weight", "blocks.0.norm.weight", "blocks.0.norm.bias",
                         "blocks.1.linear.weight"]  # forward order, as the probes require
    assert isinstance(build_model(compose(["norm=l1"])).blocks[0].norm, LpNorm)


def test_glorot_uniform_init():
    torch.manual_seed(0)
    weights = torch.stack([m.weight for _, m in probes.numbered_layers(build_model(compose()))])
    bound = math.sqrt(6 / (10 + 10))
    assert weights.abs().max() <= bound and weights.abs().max() > 0.95 * bound
    assert weights.var().item() == pytest.approx(bound**2 / 3, rel=0.1)  # U(-b, b) has variance b^2/3


def test_standard_dln_is_the_matrix_product():
    model = build_model(compose()).double()
    x = torch.randn(7, 10, dtype=torch.float64)
    product = torch.eye(10, dtype=torch.float64)
    for _, layer in probes.numbered_layers(model):
        product = layer.weight @ product
    torch.testing.assert_close(model(x), x @ product.T)


def test_gaussian_data_and_losses_by_hand():
    def data(seed, loss="sum"):
        return GaussianRegression(10, 1000, seed, 1.0, 1.0, loss, torch.device("cpu"), torch.float64)

    a, b, c = data(3), data(3), data(4)
    assert torch.equal(a.inputs, b.inputs) and not torch.equal(a.inputs, c.inputs)
    x, y = a.train_batch(0)
    assert x.shape == (1000, 10) and a.train_batch(5)[0] is x  # full batch, every step
    assert x.mean().abs() < 0.1 and x.std().item() == pytest.approx(1.0, rel=0.05)
    matrix = torch.linalg.lstsq(x, y).solution.T  # y = x A^T exactly
    torch.testing.assert_close(x @ matrix.T, y)
    assert matrix.std().item() == pytest.approx(1.0, rel=0.3)
    out = torch.zeros_like(y)
    total = sum(float(v) ** 2 for v in y.flatten())
    assert a.loss(out, y).item() == pytest.approx(total)
    assert data(3, "half_sum").loss(out, y).item() == pytest.approx(total / 2)
    assert data(3, "mean").loss(out, y).item() == pytest.approx(total / 1000)


def test_biased_dln_is_an_affine_map_per_layer_and_starts_at_zero_bias():
    torch.manual_seed(0)
    model = build_model(compose(["model.bias=true", "model.depth=4"])).double()
    assert all(layer.bias.abs().sum() == 0 for _, layer in probes.numbered_layers(model))  # TF Dense's zeros
    torch.manual_seed(0)  # and the same weights as without: the bias draws nothing from the generator
    plain = build_model(compose(["model.depth=4"])).double()
    for (_, biased), (_, unbiased) in zip(probes.numbered_layers(model), probes.numbered_layers(plain), strict=True):
        assert torch.equal(biased.weight, unbiased.weight)
    with torch.no_grad():
        for _, layer in probes.numbered_layers(model):
            layer.bias.normal_()
    x = torch.randn(7, 10, dtype=torch.float64)
    h = x
    for _, layer in probes.numbered_layers(model):  # a naive loop over samples and units
        h = torch.stack([torch.stack([sum(layer.weight[i, j] * row[j] for j in range(10)) + layer.bias[i]
                                      for i in range(10)]) for row in h])
    torch.testing.assert_close(model(x), h)
    # stacked with another seed's model, each run computes what it computes alone
    other = build_model(compose(["model.bias=true", "model.depth=4", "seed=1"])).double()
    stack = StackedDLN([model, other], "none").double()
    out = stack(torch.stack([x.T, x.T]).contiguous())
    torch.testing.assert_close(out[0].T, model(x))
    torch.testing.assert_close(out[1].T, other(x))
    assert stack.member_state_dict(0).keys() == model.state_dict().keys()


def test_orthogonal_target_has_flat_singular_values_and_the_gaussian_draws_frobenius_scale():
    def data(spectrum, std=1.0):
        return GaussianRegression(10, 1000, 3, 1.0, std, "sum", torch.device("cpu"), torch.float64, spectrum)

    gaussian, flat = data("gaussian"), data("orthogonal", std=2.0)
    assert torch.equal(gaussian.inputs, flat.inputs)  # the same x: only A differs
    a = torch.linalg.lstsq(flat.inputs, flat.targets).solution.T
    torch.testing.assert_close(torch.linalg.svdvals(a), torch.full((10,), 2.0 * math.sqrt(10), dtype=torch.float64))
    spread = torch.linalg.svdvals(torch.linalg.lstsq(gaussian.inputs, gaussian.targets).solution.T)
    assert spread.max() / spread.min() > 5  # the Gaussian A's singular values are spread out


def test_added_dln_keys_stay_out_of_the_identity_at_their_old_values():
    default = identity(compose())
    assert "bias" not in default["model"] and "target_spectrum" not in default["data"]  # stored runs keep their keys
    assert identity(compose(["model.bias=true"]))["model"]["bias"] is True
    assert identity(compose(["data.target_spectrum=orthogonal"]))["data"]["target_spectrum"] == "orthogonal"
