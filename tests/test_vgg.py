"""VGG: shapes, the paper's layer numbering, biases, init, and the noisy layer in train and eval mode;
a tiny VGG run through the training loop with evaluation and every probe."""

import pandas as pd
import pytest
import torch
from torch import nn

from bnlab import probes, store
from bnlab.config import ConfigError, compose, run_key, validate
from bnlab.models import build_model, num_layers
from bnlab.models.vgg import LAYOUTS, VGG
from bnlab.norms import BatchNoise, BatchNorm, LpNorm
from bnlab.training.runner import run

CONVS = {"vgg11": 8, "vgg13": 10, "vgg16": 13, "vgg19": 16}
NORM_TYPES = {"none": nn.Identity, "batch": BatchNorm, "l1": LpNorm, "l2": LpNorm, "linf": LpNorm}


@pytest.mark.parametrize("depth", list(LAYOUTS))
@pytest.mark.parametrize("norm", list(NORM_TYPES))
def test_shapes_numbering_and_biases(depth, norm):
    model = VGG(depth, width=0.125, norm_kind=norm, init="glorot_uniform", head="linear")  # the SPEC's layout
    assert model(torch.randn(4, 3, 32, 32)).shape == (4, 10)
    layers = probes.numbered_layers(model)
    assert len(layers) == CONVS[depth] + 1 == num_layers(compose(["model=vgg", f"model.depth={depth}",
                                                                  "model.head=linear"]))
    assert all(isinstance(m, nn.Conv2d) for _, m in layers[:-1]) and layers[-1][0] == "classifier"
    numbers = model.activation_modules()
    assert sorted(numbers) == list(range(1, CONVS[depth] + 2))
    modules = dict(model.named_modules())
    for n, (name, conv) in enumerate(layers[:-1], 1):
        assert numbers[n] == name.replace(".conv", ".norm")  # the slot right after layer #n
        assert isinstance(modules[numbers[n]], NORM_TYPES[norm])
        assert (conv.bias is not None) == (norm == "none")  # a norm's shift replaces the conv bias
        bound = (6 / ((conv.in_channels + conv.out_channels) * 9)) ** 0.5  # Glorot uniform
        assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound


def test_vgg16_layout_and_width_multiplier():
    full = VGG("vgg16", 1.0, head="linear")
    channels = [m.out_channels for _, m in probes.numbered_layers(full)[:-1]]
    assert channels == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert full.classifier.in_features == 512
    narrow = [m.out_channels for _, m in probes.numbered_layers(VGG("vgg16", 0.125, head="linear"))[:-1]]
    assert narrow == [c // 8 for c in channels]
    with pytest.raises(ValueError, match="vgg16"):
        VGG("vgg15")


def test_noisy_batchnorm_is_random_in_training_and_plain_in_evaluation():
    cfg = compose(["model=vgg", "norm=noisy_batch", "model.width=0.125"])
    noisy = build_model(cfg)
    assert isinstance(noisy.features[0].norm.noise, BatchNoise)
    plain = build_model(compose(["model=vgg", "norm=batch", "model.width=0.125"]))
    x = torch.randn(8, 3, 32, 32)
    assert not torch.allclose(noisy(x), noisy(x))  # a fresh draw every training step
    torch.manual_seed(1)
    a = noisy(x)
    torch.manual_seed(1)
    assert torch.equal(a, noisy(x))  # ... from torch's generator, so probes can replay it
    plain.load_state_dict(noisy.state_dict())  # the same weights and running statistics
    noisy.eval(), plain.eval()
    assert torch.equal(noisy(x), noisy(x)) and torch.allclose(noisy(x), plain(x))


def test_noise_without_batchnorm_sits_on_the_raw_preactivations():
    model = build_model(compose(["model=vgg", "norm=noisy_none", "model.width=0.125"]))
    assert isinstance(model.features[0].norm, BatchNoise) and model.features[0].conv.bias is not None


def test_config_rejects_impossible_vgg_settings():
    for overrides, key in ((["model.depth=vgg15"], "model.depth"), (["model.width=0"], "model.width"),
                           (["data=gaussian"], "data"), (["data.source=ftp"], "data.source"),
                           (["data.train_subset=100"], "data.train_subset"),
                           (["probes.ics.layers=[17]"], "probes.ics.layers")):
        with pytest.raises(ConfigError) as err:
            validate(compose(["model=vgg", *overrides]))
        assert err.value.key == key


def test_where_the_data_live_is_not_part_of_a_runs_identity(tmp_path):
    a = compose(["model=vgg", "data=cifar10_jpeg", f"data.root={tmp_path}/a", "data.cache_dir=x"])
    b = compose(["model=vgg", "data=cifar10_jpeg", f"data.root={tmp_path}/b", "data.cache_dir=y"])
    assert run_key(a) == run_key(b)
    assert run_key(a) != run_key(compose(["model=vgg", "data=cifar10", f"data.root={tmp_path}/a"]))


TINY_VGG = ["model=vgg", "scale=smoke", "model.width=0.0625", "train.steps=6", "probes.every=3", "data.eval.every=4",
            "data.train_subset=null", "runtime.progress=false", "runtime.log_every=3", "logger=none"]


def test_tiny_vgg_run_trains_evaluates_and_probes(tiny_cifar, runs_dir):
    directory = run(compose([*TINY_VGG, "norm=batch", "probes.ics.layers=all"]))
    m = store.read_metrics(directory)
    summary = store.read_summary(directory)
    assert summary["status"] == "finished" and "JPEG copy" in summary["data"]
    assert sorted(m[m.metric == "eval_test_accuracy"].step) == [0, 4, 6]  # interval, and the trained model
    assert summary["final_eval_test_accuracy"] == m[m.metric == "eval_test_accuracy"].value.iloc[-1]
    assert m[m.metric == "accuracy"].value.between(0, 100).all() and len(m[m.metric == "accuracy"]) == 6
    assert sorted(m[m.metric == "ics_cos"].layer.unique()) == list(range(1, 17))  # every layer, the fc head's too
    assert m.metric.str.startswith("grad_diff@").sum() == 2 * 8
    assert set(m[m.metric == "bn_sigma_median"].layer) == set(range(1, 16))  # every BatchNorm: 13 convs, 2 fc
    act_steps = sorted(m[m.metric.str.startswith("act_mean")].step.unique())
    assert act_steps == [0, 1, 3, 4]  # each probe step and the one after it (figure 8)
    assert set(m[m.metric.str.startswith("act_q")].layer) == {2, 3, 9, 11, 13}


def test_a_curvature_run_serves_the_default_probed_run_bit_for_bit(tiny_cifar, runs_dir, tmp_path):
    """The curvature probes switch a BatchNorm model out of channels-last and back (second_order_layout): the
    probes they share with a default-probed run still measure exactly what that run measures alone."""
    from runhelpers import metrics

    curvature = ["probes.hessian.enabled=true", "probes.hessian.every=2", "probes.hessian.iterations=3",
                 "probes.theorems.enabled=true", "probes.theorems.every=3", "probes.theorems.units=1"]
    covering = run(compose([*TINY_VGG, "norm=batch", *curvature]))
    default = compose([*TINY_VGG, "norm=batch"])
    assert store.find_run(default) == covering
    alone = metrics(run(compose([*TINY_VGG, "norm=batch", f"runtime.runs_dir={tmp_path / 'alone'}"])))
    held = metrics(covering)
    assert set(alone.metric) < set(held.metric)
    pd.testing.assert_frame_equal(held[held.metric.isin(set(alone.metric))].reset_index(drop=True), alone)


def test_probes_do_not_change_a_vgg_trajectory(tiny_cifar, runs_dir, tmp_path):
    probed = run(compose([*TINY_VGG, "norm=noisy_batch"]))
    # another store, or the probed run would serve this one
    plain = run(compose([*TINY_VGG, "norm=noisy_batch", "probes=none", f"runtime.runs_dir={tmp_path}/other"]))
    assert store.read_summary(plain)["status"] == "finished" and probed != plain

    def loss(d):
        m = store.read_metrics(d)
        return m[m.metric == "loss"].value.tolist()

    assert loss(probed) == loss(plain)


def test_missing_data_fails_before_training(runs_dir, tmp_path, monkeypatch):
    from bnlab.data.cifar10 import DataError

    monkeypatch.setenv("BNLAB_DATA", str(tmp_path / "nothing-here"))
    with pytest.raises(DataError, match="CIFAR-10 not found"):
        run(compose([*TINY_VGG, "norm=batch", "data.download=false"]))
    assert not list(runs_dir.rglob("metrics.parquet"))


def test_vgg_defaults_follow_the_spec():
    cfg = compose(["model=vgg"])
    assert (cfg.model.depth, cfg.model.width, cfg.train.steps) == ("vgg16", 1.0, 15000)
    assert cfg.optim.lr == pytest.approx(0.1) and cfg.optim.momentum == 0 and cfg.optim.weight_decay == 0
    data = cfg.data
    assert (data.name, data.batch_size, data.augment, data.train_subset) == ("cifar10", 128, False, None)
    m = cfg.probes.landscape.multipliers
    assert (m.start, m.stop, m.num, m.spacing) == (0.5, 4.0, 8, "linear")
    assert compose(["model=vgg", "optim.lr_factor=5"]).optim.lr == pytest.approx(0.5)
    assert compose(["model=vgg", "data=cifar10_jpeg"]).data.source == "jpeg"
    # calibrated (docs/calibration.md), the initialization per width; the SPEC's literal reading is one override away
    assert (cfg.model.init, cfg.model.init_gain, cfg.model.head, cfg.model.conv_bias, data.input_scale) == (
        "glorot_uniform", pytest.approx(1.6 ** 0.5), "fc", "auto", "standardize")
    smoke = compose(["model=vgg", "scale=smoke"]).model
    assert (smoke.init, smoke.init_gain) == ("he_normal", 1.0)
    assert compose(["model=vgg", "scale=smoke", "scale.vgg.init=glorot_normal"]).model.init == "glorot_normal"
    literal = build_model(compose(["model=vgg", "model.init=glorot_uniform", "model.init_gain=1", "model.width=0.125"]))
    assert literal.features[0].conv.weight.abs().max() <= (6 / ((3 + 8) * 9)) ** 0.5


def test_bnlab_train_reports_missing_data_without_a_traceback(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "bnlab.cli.train", "model=vgg", f"data.root={tmp_path}/none",
                          "data.download=false", "logger=none",
                          f"runtime.runs_dir={tmp_path}/runs"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "bnlab-train: CIFAR-10 not found" in out.stderr and "Traceback" not in out.stderr


def test_batchnorm_after_relu_places_the_same_layer_after_the_nonlinearity():
    """norm=batch_after_relu: conv -> ReLU -> BatchNorm in every block (the head's hidden layers too), checked
    against the composition by hand; the conv keeps its bias (no shift comes before the ReLU); the DLN, with no
    nonlinearity, refuses it."""
    from bnlab.config import ConfigError, validate

    cfg = compose(["model=vgg", "scale=smoke", "norm=batch_after_relu"])
    validate(cfg)
    torch.manual_seed(0)
    model = build_model(cfg).double().train()
    block = model.features[0]
    assert block.conv.bias is not None and type(block.norm).__name__ == "BatchNorm"
    x = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    reference = torch.nn.functional.batch_norm(torch.relu(block.conv(x)), None, None, block.norm.weight,
                                               block.norm.bias, training=True, eps=block.norm.eps)
    torch.testing.assert_close(block(x), reference)
    hidden = model.classifier[0]
    h = torch.randn(6, hidden.linear.in_features, dtype=torch.float64)
    torch.testing.assert_close(hidden(h), torch.nn.functional.batch_norm(
        torch.relu(hidden.linear(h)), None, None, hidden.norm.weight, hidden.norm.bias, training=True,
        eps=hidden.norm.eps))
    plain = build_model(compose(["model=vgg", "scale=smoke", "norm=batch"]))
    assert plain.features[0].conv.bias is None  # before the ReLU, BN's shift replaces the bias
    with pytest.raises(ConfigError) as err:
        validate(compose(["model=dln", "scale=smoke", "norm=batch_after_relu"]))
    assert err.value.key == "norm.kind"
