"""A normalization and a model family of one's own, declared in a module outside bnlab through the registries
(bnlab.norms.register_norm, bnlab.models.register_model) and a config file each, train, are probed, are
planned and are drawn like the paper's; the paper's claims keep their own sets (docs/extending.md)."""

import importlib
import json
import math
import shutil
import sys

import matplotlib
import pytest
import torch

from bnlab.config import ConfigError

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

EXTENSION = '''
"""A user's own: RMS normalization over the batch, and a plain multilayer perceptron."""
import torch
from torch import nn

from bnlab.models import ModelFamily, norm_kwargs, register_model
from bnlab.norms import Normalization, make_norm, register_norm
from bnlab.util.checks import check_positive


class BatchRMSNorm(nn.Module):
    """Per unit: x / sqrt(mean over the batch of x^2 + eps), then a learnable scale and shift."""

    def __init__(self, num_features, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x):
        return x / (x.square().mean(0) + self.eps).sqrt() * self.weight + self.bias


register_norm(Normalization("rms", lambda n, *, eps, **_: BatchRMSNorm(n, eps), "Standard + RMS", "tab:olive", ":"))


class MLP(nn.Module):
    """depth square linear maps, each but the last followed by its normalization and a ReLU."""

    def __init__(self, width, depth, norm_kind, **kwargs):
        super().__init__()
        self.depth = depth
        self.blocks = nn.Sequential(*(
            nn.Sequential(nn.Linear(width, width), make_norm(norm_kind, width, **kwargs), nn.ReLU())
            if i < depth - 1 else nn.Sequential(nn.Linear(width, width)) for i in range(depth)))

    def forward(self, x):
        return self.blocks(x)

    def activation_modules(self):
        return {i + 1: f"blocks.{i}.1" for i in range(self.depth - 1)}


register_model(ModelFamily(
    "mlp", lambda cfg: MLP(cfg.model.width, cfg.model.depth, cfg.norm.kind, **norm_kwargs(cfg.norm)),
    lambda cfg: cfg.model.depth, ("gaussian",), "MLP",
    validate=lambda cfg: check_positive(cfg, "model.depth", integer=True), cost_as="dln"))
'''

MODEL_YAML = """
name: mlp
width: 10
depth: 3
init_gain: 1.0
base_lr: 1.0e-4
landscape: {start: 0.5, stop: 4.0, num: 3, spacing: linear}
ics_layers: [1, 2]
activation_layers: [1, 2]
activation_quantiles: [0.1, 0.5, 0.9]
activation_consecutive: false
"""
SCALE_BLOCK = """
mlp:
  steps: 40
  probe_every: 10
  early_probe_every: 10
  train_subset: null         # what data=cifar10 would read (the family refuses it)
  eval_every: 10
  eval_train_examples: 100
  eval_test_examples: 100
"""


@pytest.fixture
def extension(tmp_path, monkeypatch):
    """The module imported as BNLAB_PLUGINS would import it, and its config files beside a copy of configs/."""
    import bnlab.config
    from bnlab.models import MODEL_FAMILIES
    from bnlab.norms import NORMALIZATIONS

    (tmp_path / "my_extension.py").write_text(EXTENSION)
    monkeypatch.syspath_prepend(str(tmp_path))
    configs = tmp_path / "configs"
    shutil.copytree(bnlab.config.CONFIG_DIR, configs)
    (configs / "model" / "mlp.yaml").write_text(MODEL_YAML)
    (configs / "data" / "mlp.yaml").write_text("defaults:\n  - gaussian\n  - _self_\n")
    (configs / "norm" / "rms.yaml").write_text("defaults:\n  - /base/norm@_here_\n  - _self_\n\nkind: rms\n")
    with open(configs / "scale" / "smoke.yaml", "a") as f:
        f.write(SCALE_BLOCK)
    with open(configs / "scale" / "paper.yaml", "a") as f:  # one setting left out, as a user might
        f.write(SCALE_BLOCK.replace("  probe_every: 10\n", ""))
    monkeypatch.setattr(bnlab.config, "CONFIG_DIR", configs)
    yield importlib.import_module("my_extension")
    NORMALIZATIONS.pop("rms", None)
    MODEL_FAMILIES.pop("mlp", None)
    sys.modules.pop("my_extension", None)


def test_a_norm_and_a_model_of_ones_own_train_are_probed_and_drawn(extension, tmp_path):
    from bnlab import store
    from bnlab.config import compose, identity
    from bnlab.launch.costs import estimated_seconds
    from bnlab.training.runner import run
    from experiments.lib.plotting import LP_FIGURE_NORMS, NORM_STYLE, loss_panel
    from experiments.lib.runs import each_model, load

    overrides = ["model=mlp", "scale=smoke", "logger=none", "runtime.progress=false",
                 f"runtime.runs_dir={tmp_path / 'runs'}"]
    cfgs = [compose([*overrides, f"norm={norm}"]) for norm in ("none", "rms")]
    assert cfgs[1].norm.kind == "rms" and cfgs[1].train.steps == 40 and cfgs[1].probes.every == 10
    assert identity(cfgs[1])["scale"]["mlp"]["steps"] == 40  # its scale keys, not VGG's or the DLN's
    assert all(math.isfinite(estimated_seconds(c)) and estimated_seconds(c) > 0 for c in cfgs)
    for cfg in cfgs:
        run(cfg)

    directory = store.run_dir(cfgs[1])
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["final_loss"] < summary["min_loss"] * 1.5
    # the BatchNorm probe has nothing to measure on this model, and says so
    assert "bn_sigma" in summary["probes_not_applicable"]
    names = set(store.read_metrics(directory).metric.astype(str))  # every probe that applies measured it
    assert {"loss", "ics_l2", "beta"} <= names
    assert any(n.startswith("landscape_loss@") for n in names) and any(n.startswith("act_mean#") for n in names)
    model = extension.MLP(10, 3, "rms", eps=1e-5)
    assert isinstance(model.blocks[0][1], extension.BatchRMSNorm)
    # its builder takes no noise: noisy BatchNorm's noise (norm.noise.enabled) goes after the layer
    from bnlab.norms import BatchNoise, make_norm
    noisy = make_norm("rms", 10, noise=dict(n_mu=0.5, n_sigma=1.25, r_mu=0.1, r_sigma=0.1))
    assert isinstance(noisy[0], extension.BatchRMSNorm) and isinstance(noisy[1], BatchNoise)

    runs = load(cfgs)
    assert [name for name, _ in each_model(runs)] == ["MLP"]
    fig, ax = plt.subplots()
    loss_panel(ax, runs, ["none", "rms"])
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert lines["Standard + RMS"].get_linestyle() == ":"
    assert matplotlib.colors.same_color(lines["Standard + RMS"].get_color(), "tab:olive")
    fig.savefig(tmp_path / "mine.png")
    plt.close(fig)
    assert NORM_STYLE["rms+noise"][0] == "Standard + RMS + noise"
    # the paper's claims keep their sets: a new norm changes no paper verdict
    assert "rms" not in LP_FIGURE_NORMS


def test_an_unknown_norm_or_model_lists_the_registered_ones(extension):
    from bnlab.config import compose, validate

    with pytest.raises(ConfigError, match="rms") as err:
        validate(compose(["norm=none", "norm.kind=weird"]))
    assert err.value.key == "norm.kind"
    with pytest.raises(ConfigError, match="gaussian") as err:  # the dataset first, before the scale's settings
        compose(["model=dln", "data=cifar10"])
    assert err.value.key == "data"
    with pytest.raises(ConfigError, match="gaussian") as err:  # the scale has them for the MLP; its family says no
        validate(compose(["model=mlp", "data=cifar10"]))
    assert err.value.key == "data"
    with pytest.raises(ConfigError, match=r"scale.mlp.probe_every is not in configs/scale/paper.yaml") as err:
        compose(["model=mlp", "scale=paper"])
    assert err.value.key == "probes.every"
    with pytest.raises(ConfigError, match="BNLAB_PLUGINS") as err:
        validate(compose(["model=dln", "model.name=resnet"]))
    assert err.value.key == "model.name"
    with pytest.raises(ConfigError) as err:
        validate(compose(["model=mlp", "scale=smoke", "model.depth=0"]))  # its own check
    assert err.value.key == "model.depth"


def test_plugins_named_in_the_environment_register_in_every_process(tmp_path):
    import subprocess

    (tmp_path / "my_extension.py").write_text(EXTENSION)
    env = {**__import__("os").environ, "BNLAB_PLUGINS": "my_extension", "PYTHONPATH": str(tmp_path)}
    code = ("import bnlab.config; from bnlab.norms import NORMALIZATIONS; from bnlab.models import MODEL_FAMILIES; "
            "print('rms' in NORMALIZATIONS, 'mlp' in MODEL_FAMILIES)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
    env["BNLAB_PLUGINS"] = "no_such_extension"
    bad = subprocess.run([sys.executable, "-c", "import bnlab.config"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "BNLAB_PLUGINS names 'no_such_extension'" in bad.stderr


def test_a_stacked_form_is_declared_with_the_norm():
    """A DLN's seeds stack only with a normalization that declares its stacked form; the paper's all do."""
    from bnlab.config import compose
    from bnlab.norms import NORMALIZATIONS
    from bnlab.training.stacking import stack_key

    assert all(NORMALIZATIONS[k].build_stacked is not None for k in ("none", "batch", "l1", "l2", "linf"))
    assert stack_key(compose(["model=dln", "norm=l2", "scale=smoke"])) is not None
    shape = (2, 3)
    stacked = NORMALIZATIONS["l2"].build_stacked(shape, momentum=0.1, eps=1e-5, center_before_norm=False)
    h = torch.randn(2, 3, 7, dtype=torch.float64)
    single = NORMALIZATIONS["l2"].build(3, momentum=0.1, eps=1e-5, center_before_norm=False, noise=None).double()
    torch.testing.assert_close(stacked.double()(h)[1], single(h[1].T).T)
