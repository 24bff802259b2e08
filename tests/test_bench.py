"""`make bench`'s costing of a paper-scale VGG run (scripts/bench.py), against what a run does: the steps
of each kind and the evaluations it counts are those a trained run logs, and the FLOPs it counts per step
are the hand count of VGG16's convolutions and classifier; the curvature item's reference measures what the
probe measures."""

import sys
from pathlib import Path

import pytest
import torch
from runhelpers import metrics

from bnlab.config import compose
from bnlab.training.loop import Trainer
from bnlab.training.runner import run

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
import bench  # noqa: E402


def test_step_kinds_are_those_a_trained_run_logs(tiny_cifar, tmp_path):
    cfg = compose(["model=vgg", "scale=smoke", "norm=batch", "model.width=0.0625", "data.train_subset=null",
                   "train.steps=11", "probes.every=4", "probes.landscape.early.every=2", "data.eval.every=3",
                   "logger=none", "runtime.progress=false", f"runtime.runs_dir={tmp_path}"])
    m = metrics(run(cfg))
    steps_with = {name: set(m.step[m.metric.str.startswith(name)]) for name in ("landscape", "act_mean", "eval_",
                                                                               "ics_cos")}
    probe = steps_with["ics_cos"] - {0}  # step 0 is the first step, a part of its own
    early = steps_with["landscape"] - steps_with["ics_cos"]  # the landscape alone, in the first 20% (3 steps)
    after = steps_with["act_mean"] - steps_with["ics_cos"]
    assert probe == {4, 8} and early == {2} and after == {1, 5, 9}  # the schedule this test expects, as logged
    assert steps_with["eval_"] == {0, 3, 6, 9, 11}
    kinds = bench.step_kinds(cfg)
    assert kinds == {"setup": 1, "first": 1, "plain": 10 - len(probe) - len(early) - len(after),
                     "probe": len(probe), "early": len(early), "after": len(after),
                     "evaluations": len(steps_with["eval_"] - {0})}
    unprobed = compose(["model=vgg", "probes=none", "scale=smoke", f"runtime.runs_dir={tmp_path}"])
    assert bench.step_kinds(unprobed)["plain"] == unprobed.train.steps - 1
    costs = {"setup": 1000.0, "first": 500.0, "plain": 1.0, "probe": 10.0, "early": 5.0, "after": 2.0,
             "evaluations": 100.0}
    assert bench.predicted_seconds(cfg, costs) == 1000 + 500 + 4 * 1.0 + 2 * 10.0 + 5.0 + 3 * 2.0 + 4 * 100.0


def vgg16_flops_by_hand(width: float, batch: int, image: int = 32) -> int:
    """Multiply-adds of VGG16's 3x3 convolutions (padding 1) and classifier (512-512-10), 2 FLOPs each: the forward
    pass once, the backward pass twice (the gradients of the inputs and of the weights), except the first
    convolution, whose input (the images) needs no gradient."""
    layers, size, channels, forward, first = bench.VGG("vgg16", width).features, image, 3, 0, None
    for layer in layers:
        if isinstance(layer, torch.nn.MaxPool2d):
            size //= 2
            continue
        out = layer.conv.out_channels
        flops = 2 * batch * size * size * channels * out * 9
        first = flops if first is None else first
        forward += flops
        channels = out
    forward += 2 * (2 * batch * channels * channels)  # the fc head's two hidden layers (the default head)
    forward += 2 * batch * channels * 10
    return 3 * forward - first


@pytest.mark.parametrize("width", [0.0625, 0.125])
def test_flops_of_a_step_are_the_hand_count(width, tiny_cifar, tmp_path):
    cfg = compose(["model=vgg", "scale=smoke", "norm=batch", f"model.width={width}", "probes=none", "logger=none",
                   "data.train_subset=null", "data.eval.every=100", f"runtime.runs_dir={tmp_path}"])
    trainer = Trainer(cfg, tmp_path / "run")
    batch = len(trainer.data.train_batch(1)[1])
    assert bench.step_flops(trainer, 1) == vgg16_flops_by_hand(width, batch)


def test_reproduce_all_estimate_combines_the_measured_items(monkeypatch):
    monkeypatch.setattr(bench, "paper_runs", lambda model, overrides: [None] * (51 if model == "dln" else 63))
    vgg = {"width": 1.0, "reproduce_all_vgg": {"runs": 63, "one_after_another_predicted_s": 1000}}
    dln = {"seeds": 8, "stacked_1_thread_s": 80.0}
    estimate = bench.reproduce_all_estimate({"vgg16_paper_run": vgg, "vgg16_packed": {"speedup": 2.0},
                                             "dln_8_seeds": dln})
    assert estimate["vgg_s"] == 500 and estimate["dln_runs"] == 51
    assert estimate["dln_s"] == 510 and estimate["total_s"] == 1010
    assert bench.reproduce_all_estimate({"vgg16_paper_run": {**vgg, "width": 0.125}, "dln_8_seeds": dln}) is None
    assert bench.reproduce_all_estimate({"vgg16_paper_run": vgg}) is None


def test_the_curvature_reference_finds_the_top_eigenvalue_the_probe_finds():
    """The bench's reference (power iteration on copied-model products) and bnlab's Lanczos measure the same
    thing: the top eigenvalue of a VGG16 with BatchNorm at width 1/16, batch statistics."""
    import torch.nn.functional as F

    from bnlab import probes

    model, (x, y) = bench.vgg16(torch.device("cpu"), 1 / 16), bench.probe_inputs(torch.device("cpu"))
    x, y = x[:32], y[:32]
    ours = probes.hessian_eigenvalues(model, F.cross_entropy, x, y, k=1, tolerance=1e-6, iterations=200)
    value, products = bench.reference_top_eigenvalue(model, x, y, 1e-6, 500)
    assert value == pytest.approx(ours["eigenvalues"][0], rel=1e-3)
    assert products > 1 and ours["converged"]


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_the_grouped_vgg_of_the_seed_stacking_bench_is_its_seeds_models(norm):
    """vgg16_seeds_stacked times one grouped network against the separate seeds: it must compute exactly their
    outputs (float64), each seed's batch through its own model."""
    from bnlab.models.vgg import VGG

    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(VGG("vgg16", 0.0625, norm).double())
    grouped = bench.GroupedVGG(models).double()
    x = torch.randn(3, 4, 3, 32, 32, dtype=torch.float64)
    together = grouped(x.permute(1, 0, 2, 3, 4).reshape(4, 9, 32, 32))
    for s, model in enumerate(models):
        torch.testing.assert_close(together[:, s], model(x[s]), rtol=1e-10, atol=1e-12)
