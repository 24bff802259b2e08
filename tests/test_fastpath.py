"""The fast paths against their plain twins: channels-last memory format and torch.compile train like the
eager, default-layout model (within float32 rounding); probes see the same noise either way. And the
training step, probes and evaluation included, never makes the host wait for the device: the only reads
are the metric flushes at the logging interval."""

import numpy as np
import pytest
import torch
from runhelpers import HostReads, metrics

from bnlab.config import compose
from bnlab.models.vgg import VGG
from bnlab.training.loop import Trainer
from bnlab.training.probe_schedule import second_order_layout
from bnlab.training.runner import run


def assert_close(a, b, rtol):
    """Same rows; the smooth metrics (training loss, landscape losses) equal within `rtol`. Accuracies and
    gradient differences amplify float rounding, so they are not compared."""
    assert a[["step", "metric", "layer"]].equals(b[["step", "metric", "layer"]])
    smooth = a.metric.isin(["loss"]) | a.metric.str.startswith("landscape_loss@")
    assert smooth.sum() > 10
    np.testing.assert_allclose(a.value[smooth].to_numpy(), b.value[smooth].to_numpy(), rtol=rtol)


def test_channels_last_trains_like_the_default_layout(tiny_cifar, tmp_path):
    # float64: in float32 the two layouts' convolutions round differently, and a BN net's weight gradients,
    # sums of terms that nearly cancel, carry that at 1e-3 relative into the step.
    tiny = ["model=vgg", "scale=smoke", "norm=noisy_batch", "model.width=0.0625", "train.steps=6", "probes.every=3",
            "data.eval.every=3", "data.train_subset=null", "train.dtype=float64", "runtime.progress=false",
            "logger=none"]
    default = run(compose([*tiny, f"runtime.runs_dir={tmp_path}/default"]))
    cfg = compose([*tiny, "runtime.channels_last=true", f"runtime.runs_dir={tmp_path}/channels_last"])
    trainer = Trainer(cfg, tmp_path / "probe")
    assert trainer.model.features[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    channels_last = run(cfg)
    assert_close(metrics(channels_last), metrics(default), rtol=1e-9)


def test_channels_last_auto_is_on_for_the_conv_net_on_a_cpu_and_off_for_the_dln(tiny_cifar, tmp_path):
    dln = compose(["scale=smoke", "logger=none", f"runtime.runs_dir={tmp_path}"])
    assert Trainer(dln, tmp_path / "a").channels_last is False
    vgg = compose(["model=vgg", "scale=smoke", "model.width=0.0625", "data.train_subset=null", "logger=none",
                   f"runtime.runs_dir={tmp_path}"])
    assert Trainer(vgg, tmp_path / "b").channels_last is True
    off = compose(["model=vgg", "scale=smoke", "model.width=0.0625", "data.train_subset=null", "logger=none",
                   "runtime.channels_last=false", f"runtime.runs_dir={tmp_path}"])
    assert Trainer(off, tmp_path / "c").channels_last is False


def test_second_order_layout_switches_the_model_to_the_default_layout_and_back():
    torch.manual_seed(0)
    model = VGG("vgg11", 0.0625, "batch").to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    conv = model.features[0].conv.weight
    before = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    with second_order_layout(model, x) as inside:
        assert inside.is_contiguous() and torch.equal(inside, x)
        assert model.features[0].conv.weight.is_contiguous()
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    for n, p in model.named_parameters():  # the same objects (the optimizer holds them), the same values
        assert p is before[n][0] and torch.equal(p, before[n][1])
    plain = torch.randn(4, 3, 32, 32)
    with second_order_layout(model, plain) as inside:  # a batch in the default layout: nothing to do
        assert inside is plain and conv.is_contiguous(memory_format=torch.channels_last)
    standard = VGG("vgg11", 0.0625, "none").to(memory_format=torch.channels_last)
    with second_order_layout(standard, x) as inside:  # no BatchNorm: channels-last is the faster layout there
        assert inside is x and standard.features[0].conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_curvature_probes_measure_the_same_in_either_layout(tiny_cifar, tmp_path):
    # float64 (see above); the Hessian and theorem probes run in the default layout inside a channels-last run
    tiny = ["model=vgg", "scale=smoke", "norm=batch", "probes=curvature", "model.width=0.0625", "train.steps=3",
            "probes.every=1", "probes.hessian.iterations=8", "probes.hessian.trace_samples=2",
            "probes.theorems.every=2", "data.eval.every=3", "data.train_subset=null", "train.dtype=float64",
            "runtime.progress=false", "logger=none"]
    default = metrics(run(compose([*tiny, "runtime.channels_last=false", f"runtime.runs_dir={tmp_path}/a"])))
    channels_last = metrics(run(compose([*tiny, "runtime.channels_last=true", f"runtime.runs_dir={tmp_path}/b"])))
    assert default[["step", "metric", "layer"]].equals(channels_last[["step", "metric", "layer"]])
    curvature = default.metric.str.startswith(("hessian_eig", "hessian_trace_", "thm41_gap_median"))
    assert curvature.sum() >= 12
    np.testing.assert_allclose(channels_last.value[curvature].to_numpy(), default.value[curvature].to_numpy(),
                               rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_compiled_training_step_matches_eager_and_probes_replay_its_noise(tmp_path):
    base = ["scale=smoke", "norm=noisy_batch", "train.steps=30", "probes.every=10", "runtime.log_every=10",
            "runtime.progress=false", "logger=none"]
    eager = run(compose([*base, f"runtime.runs_dir={tmp_path}/eager"]))
    compiled = run(compose([*base, "runtime.compile=true", f"runtime.runs_dir={tmp_path}/compiled"]))
    assert_close(metrics(compiled), metrics(eager), rtol=1e-5)


TINY_VGG = ["model=vgg", "scale=smoke", "norm=noisy_batch", "model.width=0.0625", "data.train_subset=null",
            "data.eval.every=2"]  # 130 images, one batch: a new epoch (permutation, augmentation) every step


@pytest.mark.parametrize("overrides,stacked", [
    (["norm=batch"], False),
    (["norm=l2", "norm.center_before_norm=true"], True),
    (["norm=linf"], True),
    (TINY_VGG, False),
], ids=["dln-batch", "stacked-dln-l2", "stacked-dln-linf", "vgg-noisy-batch"])
def test_steps_probes_and_evaluation_never_wait_for_the_device(overrides, stacked, tiny_cifar, tmp_path, monkeypatch):
    common = [*overrides, "probes.every=2", "logger=none", "runtime.progress=false", f"runtime.runs_dir={tmp_path}"]
    if stacked:
        cfgs = [compose([*common, f"seed={s}"]) for s in range(3)]
        trainer = Trainer(cfgs, [tmp_path / str(s) for s in range(3)])
    else:
        trainer = Trainer(compose(common), tmp_path / "run")
    trainer.step(0)  # the first probe step makes the probes' constants on the device, once
    reads = HostReads(monkeypatch)
    with reads:
        for step in range(1, 6):  # probes at 2 and 4 (activations also at 3 and 5), evaluation at 2 and 4
            trainer.step(step)
    assert trainer.probes.due(2) and (trainer._evaluating(2) or not trainer.data.classification)
    assert reads.counts == {}
    with reads:  # the check sees a read where there is one: the flush reads every pending row at once
        for member in trainer.members:
            member.rows.flush()
    assert reads.counts.get("tolist") == len(trainer.members)
