"""The calibration options (weight initialization, classifier head, conv bias, input scaling, the DLN's
initialization gain), the probes' strict fp32, BatchNorm's gamma / sigma probe, and the default standard
VGG's signal at initialization: a later change must not bring the dead start back unnoticed."""

import math

import pytest
import torch
from torch import nn

from bnlab import probes
from bnlab.config import ConfigError, compose, validate
from bnlab.data.datasets import INPUT_SCALES, ImageClassification
from bnlab.models import build_model, num_layers
from bnlab.models.vgg import INITS, VGG
from bnlab.training.probe_schedule import ProbeSchedule
from bnlab.training.rows import MetricRows


@pytest.mark.parametrize("init", INITS)
def test_initializations_have_their_variance(init):
    torch.manual_seed(0)
    conv = VGG("vgg11", 1.0, init=init).features[-2].conv  # 512 -> 512 channels, 3x3: 2.4M weights
    fan_in = fan_out = 512 * 9
    want = 2 / (fan_in + fan_out) if init.startswith("glorot") else 2 / fan_in  # Glorot; He for ReLUs
    assert conv.weight.var().item() == pytest.approx(want, rel=0.01)
    bound = math.sqrt(3 * want)  # a uniform distribution's bound for that variance
    if init.endswith("uniform"):
        assert bound * 0.999 < conv.weight.abs().max().item() <= bound
    else:
        assert conv.weight.abs().max().item() > 1.5 * bound  # normal: tails beyond the uniform bound


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_fc_head_is_two_normalized_hidden_layers_then_the_output(norm):
    cfg = compose(["model=vgg", "model.width=0.125", "model.head=fc", f"norm={norm}"])
    model = build_model(cfg)
    assert model(torch.randn(4, 3, 32, 32)).shape == (4, 10)
    layers = probes.numbered_layers(model)
    assert len(layers) == 16 == num_layers(cfg)
    assert [name for name, _ in layers[-3:]] == ["classifier.0.linear", "classifier.1.linear", "classifier.2"]
    assert [layer.out_features for _, layer in layers[-3:]] == [64, 64, 10]
    numbers = model.activation_modules()
    assert (numbers[14], numbers[15], numbers[16]) == ("classifier.0.norm", "classifier.1.norm", "classifier.2")
    assert (layers[-2][1].bias is None) == (norm == "batch") and layers[-1][1].bias is not None
    assert isinstance(model.get_submodule("classifier.0.norm"), nn.Identity if norm == "none" else nn.Module)


def test_conv_bias_can_be_forced_either_way():
    with_bn = VGG("vgg11", 0.125, norm_kind="batch", conv_bias=True)
    plain = VGG("vgg11", 0.125, norm_kind="none", conv_bias=False, head="linear")
    assert all(m.conv.bias is not None for m in with_bn.features if hasattr(m, "conv"))
    assert all(m.conv.bias is None for m in plain.features if hasattr(m, "conv"))
    assert plain.classifier.bias is not None  # the output layer has no norm to stand in for a bias


@pytest.mark.parametrize("scale", list(INPUT_SCALES))
def test_input_scales_by_lookup_equal_their_formula(scale):
    images = torch.randint(0, 256, (200, 3, 8, 8), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    labels = torch.zeros(200, dtype=torch.long)
    data = ImageClassification({"train_x": images, "train_y": labels, "test_x": images, "test_y": labels}, 100, 0,
                               None, False, 100, None, torch.device("cpu"), torch.float64, input_scale=scale)
    pixels = images.double()
    if scale == "standardize":
        mean, std = pixels.mean((0, 2, 3), keepdim=True), pixels.std((0, 2, 3), keepdim=True)
        want = (pixels - mean) / std
    else:
        want = pixels / 255 if scale == "unit" else pixels
    torch.testing.assert_close(data.train_x, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("override, key", [
    ("model.init=orthogonal", "model.init"), ("model.head=mlp", "model.head"),
    ("model.conv_bias=maybe", "model.conv_bias"), ("data.input_scale=minmax", "data.input_scale")])
def test_vgg_calibration_options_are_validated(override, key):
    with pytest.raises(ConfigError) as err:
        validate(compose(["model=vgg", override]))
    assert err.value.key == key


def test_dln_init_gain_scales_glorot_and_is_validated():
    for gain in (0.5, 1.0, 2.0):
        model = build_model(compose([f"model.init_gain={gain}"]))
        weight = model.blocks[3].linear.weight
        bound = gain * math.sqrt(6 / 20)  # Glorot uniform for 10 x 10
        assert weight.abs().max().item() <= bound and weight.abs().max().item() > 0.9 * bound
    with pytest.raises(ConfigError) as err:
        validate(compose(["model.init_gain=0"]))
    assert err.value.key == "model.init_gain"


@pytest.mark.parametrize("init", INITS)
def test_vgg_init_gain_scales_the_variance_by_its_square(init):
    for gain in (1.0, math.sqrt(1.6)):
        torch.manual_seed(0)
        conv = VGG("vgg11", 1.0, init=init, init_gain=gain).features[-2].conv  # 512 -> 512, 3x3
        want = 2 / (2 * 512 * 9) if init.startswith("glorot") else 2 / (512 * 9)
        assert conv.weight.var().item() == pytest.approx(gain ** 2 * want, rel=0.01)
    with pytest.raises(ConfigError) as err:
        validate(compose(["model=vgg", "model.init_gain=-1"]))
    assert err.value.key == "model.init_gain"


def test_vgg_init_gain_at_1_keeps_the_stored_runs_keys():
    """init_gain came after VGG runs were stored: at 1 it stays out of the identity (same key, same run);
    any other value makes another run. The DLN always had it, so there it is always part of the identity."""
    from bnlab.config import identity, run_key

    plain = compose(["model=vgg", "scale=smoke"])
    assert "init_gain" not in identity(plain)["model"]
    assert run_key(compose(["model=vgg", "scale=smoke", "model.init_gain=1.0"])) == run_key(plain)
    assert run_key(compose(["model=vgg", "scale=smoke", "model.init_gain=1.2"])) != run_key(plain)
    assert identity(compose(["model=dln"]))["model"]["init_gain"] == 1.0


def test_the_scales_initialization_is_the_model_keys_and_the_paper_default_is_the_calibrated_run():
    """The scale sets VGG's initialization (model.init: ${scale.vgg.init}); the identity holds it once, in
    model: the smoke runs stored before the scale set it keep their keys, and at paper scale the default is the
    same run as the calibration's chosen candidate spelled out (its 1,500-step runs are default runs)."""
    import importlib.util
    import math

    from bnlab.config import identity, run_key

    smoke = compose(["model=vgg", "scale=smoke"])
    assert "init" not in identity(smoke)["scale"]["vgg"] and identity(smoke)["model"]["init"] == "he_normal"
    assert run_key(smoke) == run_key(compose(["model=vgg", "scale=smoke", "model.init=he_normal"]))
    assert run_key(smoke) != run_key(compose(["model=vgg", "scale=smoke", "scale.vgg.init=glorot_uniform"]))
    spec = importlib.util.spec_from_file_location("calibrate_vgg", "scripts/calibrate_vgg.py")
    calibrate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calibrate)
    base = [*calibrate.base_overrides(1500), "norm=none", "optim.lr=0.1"]
    chosen = compose([*base, *calibrate.CANDIDATES["glorot_x1.6_fc_head"]])
    assert run_key(compose(base)) == run_key(chosen)
    assert identity(compose(base))["model"]["init_gain"] == math.sqrt(1.6)


def test_probes_compute_in_strict_fp32_and_restore_the_switches():
    """TF32 rounds at about 1e-3 relative; the ICS l2-differences at lr 0.01 go below that."""
    seen = []
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].register_forward_hook(lambda *_: seen.append((torch.backends.cuda.matmul.allow_tf32,
                                                           torch.backends.cudnn.allow_tf32)))
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
        probes.landscape(model, nn.functional.cross_entropy, x, y, 0.1, [1.0, 2.0])
        assert seen and all(flags == (False, False) for flags in seen)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_bn_gain_probe_is_gamma_over_the_input_std():
    cfg = compose(["norm=batch", "model.depth=4", "model.activation_layers=[1]", "data.num_samples=50",
                   "probes.ics.enabled=false",
                   "probes.landscape.enabled=false", "probes.activations.enabled=false"])
    torch.manual_seed(0)
    model = build_model(cfg).double()
    with torch.no_grad():
        for block in model.blocks[:-1]:
            block.norm.weight.uniform_(-2, 2)  # gamma away from 1, signs included
    x = torch.randn(50, 10, dtype=torch.float64)
    rows = MetricRows()
    ProbeSchedule(cfg, model, lambda o, t: (o - t).square().sum(), 1e-6).before_step(0, x, x, [rows])
    got = {(metric, layer): value for _, metric, layer, value in rows.flush()}
    h = x
    for number, block in enumerate(model.blocks[:-1], 1):
        pre = block.linear(h).detach()
        sigma = pre.var(0, unbiased=False).sqrt()
        gamma = block.norm.weight.detach().abs()
        assert got[("bn_gamma_median", number)] == pytest.approx(gamma.median().item(), rel=1e-12)
        assert got[("bn_gain_median", number)] == pytest.approx((gamma / sigma).median().item(), rel=1e-9)
        h = block(h)


def standardized_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images (neighbouring pixels correlated, as in photographs) standardized per channel."""
    g = torch.Generator().manual_seed(3)
    coarse = torch.rand(n, 3, 8, 8, generator=g)
    x = nn.functional.interpolate(coarse, size=32, mode="bilinear", align_corners=False)
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    return x, torch.randint(0, 10, (n,), generator=g)


def test_default_standard_vgg_has_signal_at_initialization():
    """The SPEC's literal Glorot reading gives logits with std about 1e-3 and weight gradients about 1e-3 at
    full width: a dead start, unlike the paper's network. The default (1.6x Glorot's variance at full width)
    must carry a signal: on real images its logit std is 0.034, 24x the literal's (vgg_signal.md)."""
    def signal(overrides):
        torch.manual_seed(0)
        model = build_model(compose(["model=vgg", "norm=none", *overrides])).train()
        x, y = standardized_images(16)
        logits = model(x)
        nn.functional.cross_entropy(logits, y).backward()
        grads = [layer.weight.grad.norm().item() for _, layer in probes.numbered_layers(model)]
        return logits.std().item(), min(grads)

    logit_std, grad = signal([])
    literal_std, literal_grad = signal(["model.init_gain=1.0", "model.head=linear"])
    assert logit_std > 10 * literal_std and grad > 5 * literal_grad
    assert grad > 0.01


def test_default_standard_vgg_learns_from_its_first_steps():
    """25 steps at lr 0.01 on 32 images: the default's loss falls (2.31 to 2.21 here), the SPEC's literal
    reading stays on the plateau of a uniform prediction, log(10) = 2.303 (2.30 to 2.29)."""
    def loss_drop(overrides):
        torch.manual_seed(0)
        model = build_model(compose(["model=vgg", "norm=none", "model.width=0.25", *overrides])).train()
        x, y = standardized_images(32)  # depth, not width, decides the dead start
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        losses = []
        for _ in range(25):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses[0] - losses[-1]

    assert loss_drop([]) > 0.05
    assert loss_drop([]) > 4 * loss_drop(["model.init_gain=1.0", "model.head=linear"])


def test_collapse_diagnosis_measures_what_it_says():
    """scripts/calibrate_vgg.py collapse: each step's loss is the fresh model's loss after that many SGD steps
    on the same batches, a dead unit is a channel with no positive input to its ReLU anywhere in the batch
    (a naive loop over channels), and the update ratio is lr |grad| / |w|."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    import calibrate_vgg

    cfg = compose(["model=vgg", "model.width=0.0625", "norm=none", "optim.lr=0.05", "seed=3"])
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 3, 32, 32, generator=gen), torch.randint(0, 10, (16,), generator=gen))
               for _ in range(3)]

    class Batches:
        def train_batch(self, step):
            return batches[step]

    rows = calibrate_vgg.first_steps(cfg, Batches(), steps=2)
    assert [r["step"] for r in rows] == [0, 1, 2]
    torch.manual_seed(3)
    model = build_model(cfg).train()
    acts = {}
    for step, row in enumerate(rows):
        x, y = batches[step]
        acts.clear()
        hooks = [model.get_submodule(name).register_forward_hook(lambda _m, _i, out, n=n: acts.__setitem__(n, out))
                 for n, name in model.activation_modules().items()]
        logits = model(x)
        for h in hooks:
            h.remove()
        loss = nn.functional.cross_entropy(logits, y)
        assert row["loss"] == pytest.approx(loss.item(), rel=1e-5)
        for i, n in enumerate(sorted(acts)[:-1]):
            a = acts[n]
            units = a.shape[1]
            dead = sum(1 for c in range(units) if not (a[:, c] > 0).any()) / units
            assert row["dead"][i] == pytest.approx(dead)
        model.zero_grad()
        loss.backward()
        layers = [m for _, m in probes.numbered_layers(model)]
        for ratio, m in zip(row["update_ratio"], layers, strict=True):
            assert ratio == pytest.approx(0.05 * m.weight.grad.norm().item() / m.weight.norm().item(), rel=1e-4)
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.05 * p.grad
