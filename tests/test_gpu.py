"""On CUDA (the `gpu` marker: skipped without it; `make gpu-check` runs them): one training step of every
model and normalization agrees with the CPU's, and a run interrupted on CUDA resumes to metrics identical
to an uninterrupted run's (runtime.deterministic)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from runhelpers import SHORT, interrupted, metrics

from bnlab.config import compose, cuda_settings
from bnlab.models import build_model
from bnlab.training.runner import run

pytestmark = pytest.mark.gpu


def one_step(model, x, y, regression: bool):
    """The loss and the flattened gradient of one forward and backward in training mode."""
    model.train()
    out = model(x)
    loss = (out - y).square().sum() / 2 if regression else F.cross_entropy(out, y)
    loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()]).double().cpu()


@pytest.mark.parametrize("norm", ["none", "batch", "l1", "l2", "linf"])
@pytest.mark.parametrize("name", ["dln", "vgg"])
def test_one_training_step_on_cuda_agrees_with_the_cpu(name, norm):
    cfg = compose([f"model={name}", f"norm={norm}", "scale=smoke"])
    settings = cuda_settings(cfg)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = settings["tf32"]
    torch.manual_seed(0)
    cpu = build_model(cfg)
    gpu = copy.deepcopy(cpu).cuda()
    if name == "dln":
        x, y = torch.randn(1000, 10), torch.randn(1000, 10) * 3
    else:
        x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    loss_cpu, grad_cpu = one_step(cpu, x, y, name == "dln")
    loss_gpu, grad_gpu = one_step(gpu, x.cuda(), y.cuda(), name == "dln")
    rtol = 1e-2 if settings["tf32"] else 1e-4  # TF32 keeps 10 mantissa bits in the products
    assert loss_gpu == pytest.approx(loss_cpu, rel=rtol)
    assert torch.nn.functional.cosine_similarity(grad_cpu, grad_gpu, dim=0) > 1 - rtol
    assert grad_gpu.norm().item() == pytest.approx(grad_cpu.norm().item(), rel=10 * rtol)


@pytest.mark.parametrize("extra", [[], ["norm=noisy_batch"]])
def test_a_run_interrupted_on_cuda_resumes_to_identical_metrics(tmp_path, monkeypatch, extra):
    overrides = [*SHORT, "runtime.device=cuda", *extra]
    reference = run(compose([*overrides, f"runtime.runs_dir={tmp_path}/reference"]))
    interrupted(tmp_path / "runs", monkeypatch, at_step=100, overrides=overrides)
    resumed = run(compose([*overrides, f"runtime.runs_dir={tmp_path}/runs"]))
    assert metrics(resumed).equals(metrics(reference))


def test_an_interrupted_vgg_run_on_cuda_resumes_to_identical_metrics(tiny_cifar, tmp_path, monkeypatch):
    tiny = ["model=vgg", "scale=smoke", "norm=noisy_batch", "model.width=0.0625", "train.steps=8", "probes.every=3",
            "data.eval.every=4", "data.train_subset=null", "data.augment=true", "runtime.checkpoint_every=2",
            "runtime.log_every=2", "runtime.progress=false", "logger=none", "runtime.device=cuda"]
    reference = run(compose([*tiny, f"runtime.runs_dir={tmp_path}/reference"]))
    interrupted(tmp_path / "runs", monkeypatch, at_step=5, overrides=tiny)
    resumed = run(compose([*tiny, f"runtime.runs_dir={tmp_path}/runs"]))
    assert metrics(resumed).equals(metrics(reference))
