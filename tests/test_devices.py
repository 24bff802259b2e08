"""A run given a GPU never trains on the CPU instead: it fails at once, where it trains, saying why; a
login node without a GPU still validates runs that ask for CUDA."""

import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from bnlab.config import compose, validate
from bnlab.util import devices
from bnlab.util.devices import DeviceError, resolve_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA does not come up")


@pytest.fixture
def cuda_down(monkeypatch):
    """CUDA not coming up, whatever this machine has; no GPU handed over by the environment."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in devices.GPU_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_auto_is_the_cpu_when_no_gpu_was_given(cuda_down):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("variable", ["CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS"])
def test_a_gpu_given_without_working_cuda_fails_naming_why_the_build_and_the_fix(cuda_down, monkeypatch, variable):
    monkeypatch.setenv(variable, "0")
    with pytest.raises(DeviceError) as err:
        resolve_device("auto")
    message = str(err.value)
    assert f"{variable}=0" in message and torch.__version__ in message
    assert (f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build") in message
    assert "runtime.device=cpu" in message and "docs/gpu.md" in message


@pytest.mark.parametrize("hidden", ["", "-1"])
def test_a_hidden_gpu_is_not_a_gpu_given(cuda_down, monkeypatch, hidden):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
    assert resolve_device("auto") == torch.device("cpu")


def test_asking_for_cuda_fails_where_the_run_trains_not_where_it_is_validated(cuda_down):
    validate(compose(["runtime.device=cuda"]))  # a login node submitting to GPU nodes
    with pytest.raises(DeviceError, match="runtime.device=cuda"):
        resolve_device("cuda")


def test_minimum_drivers_cover_the_installed_build():
    if torch.version.cuda:
        assert int(torch.version.cuda.split(".")[0]) in devices.MIN_DRIVER


@no_cuda
def test_bnlab_train_given_a_gpu_it_cannot_use_stops_before_writing_anything(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in (*devices.GPU_VARIABLES, "BNLAB_DEVICE")}
    env["CUDA_VISIBLE_DEVICES"] = "0"
    done = subprocess.run([sys.executable, "-m", "bnlab.cli.train", "train.steps=5", "logger=none",
                           f"runtime.runs_dir={tmp_path}/runs"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stderr
    assert "CUDA is not available, but this process was given a GPU (CUDA_VISIBLE_DEVICES=0)" in done.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json"))


@pytest.mark.parametrize("modes,processes,refused", [
    (["Exclusive_Process"], 2, True), (["Default"], 2, False), (["Exclusive_Process"], 1, False), ([], 4, False)])
def test_several_processes_on_an_exclusive_mode_gpu_are_refused_before_any_starts(monkeypatch, modes, processes,
                                                                                    refused):
    from bnlab.launch.local import train_together
    from bnlab.util.devices import check_processes_per_gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(devices, "compute_modes", lambda: modes)
    if not refused:
        check_processes_per_gpu(processes, "auto", "--pack 2")
        return
    with pytest.raises(DeviceError, match="Exclusive_Process.*--pack 1"):
        check_processes_per_gpu(processes, "auto", "--pack 2")
    vgg_and_dln = [OmegaConf.to_container(compose([f"model={m}", "logger=none", "runtime.device=auto"]))
                   for m in ("dln", "vgg")]
    with pytest.raises(DeviceError):  # a packed SLURM task: two processes, refused before either starts
        train_together(vgg_and_dln)


@no_cuda
def test_gpu_check_without_cuda_says_why_and_writes_nothing(tmp_path):
    script = devices.__file__.replace("bnlab/util/devices.py", "scripts/gpu_check.py")
    done = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "gpu-check: CUDA is not available, but runtime.device=cuda" in done.stderr


def test_tf32_emulation_rounds_to_ten_mantissa_bits_as_a_naive_formula_does(monkeypatch):
    """scripts/tf32_emulation.py (issue 27's measurement of TF32 on VGG's verdicts, on a CPU): x = m 2^e with
    m in [0.5, 1) keeps 11 significant bits, rounded to nearest with ties to even (Python's round)."""
    import importlib
    import math
    from pathlib import Path

    import torch.nn.functional as F

    monkeypatch.setattr(F, "conv2d", F.conv2d)  # restored after the test: importing the module patches them
    monkeypatch.setattr(F, "linear", F.linear)
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "scripts"))
    sys.modules.pop("tf32_emulation", None)
    emulation = importlib.import_module("tf32_emulation")
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(2000, generator=g) * 10.0 ** torch.randint(-8, 8, (2000,), generator=g),
                   torch.tensor([1 + 2 ** -11, 1 + 3 * 2 ** -11, -(1 + 2 ** -11), 0.0, float("inf"), 1 - 2 ** -12])])
    got = emulation.round_to_tf32(x)

    def naive(v: float) -> float:
        if v == 0 or math.isinf(v):
            return v
        m, e = math.frexp(v)
        return math.ldexp(round(m * 2 ** 11) / 2 ** 11, e)

    assert got.tolist() == [naive(v) for v in x.tolist()]
    assert got[-6:-3].tolist() == [1.0, 1 + 2 ** -9, -1.0]  # ties to even
    layer = torch.nn.Linear(4, 3)
    inputs = torch.randn(5, 4, requires_grad=True)
    out = layer(inputs)  # through the patched F.linear: the rounded product, the gradient straight through
    want = emulation.round_to_tf32(inputs.detach()) @ emulation.round_to_tf32(layer.weight.detach()).T + layer.bias
    torch.testing.assert_close(out, want)
    out.sum().backward()
    torch.testing.assert_close(inputs.grad, emulation.round_to_tf32(layer.weight.detach()).sum(0).expand(5, 4))
    sys.modules.pop("tf32_emulation", None)
