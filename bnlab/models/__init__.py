"""The model families, each declared once (`register_model`), and model construction from config.

A family is a builder from config plus what the rest of the suite needs to know without building it: how
many conv/linear layers it has (the paper's layer numbers #1..#L), which datasets it trains on, how its keys
are checked, whether its seeds can train stacked, and the cost table that plans its runs. Its settings that
follow the scale (steps, width, probe intervals) live in configs/scale/<scale>.yaml under its name, read as
`${scale.${model.name}.*}`, and its own keys in configs/model/<name>.yaml.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from bnlab.models.dln import DeepLinearNet
from bnlab.models.dln_stack import StackedDLN
from bnlab.models.vgg import HEADS, LAYOUTS, VGG, validate_vgg
from bnlab.norms import ADDED_NORM_KEYS, norm_setting, normalization
from bnlab.util.checks import check, check_positive
from bnlab.util.registry import lookup, register


@dataclass(frozen=True)
class ModelFamily:
    name: str
    build: Callable[..., nn.Module]          # build(cfg) -> the model (cfg.model its keys, cfg.norm the norm's)
    num_layers: Callable[..., int]           # num_layers(cfg): conv/linear layers, without building the model
    datasets: tuple[str, ...]                # the `data.name`s it trains on
    label: str                               # figure titles and tables ("VGG")
    validate: Callable[..., None] = lambda cfg: None   # raises bnlab.util.checks.ConfigError
    # stack(models, cfg): several seeds' models as one (bnlab.training.stacking); None: seeds train one by one
    stack: Callable[..., nn.Module] | None = None
    cost_as: str = "vgg"                     # the measured family whose cost table plans its runs (launch.costs)
    tf32: bool = True                        # whether `runtime.tf32: auto` lets CUDA use TF32 for it


MODEL_FAMILIES: dict[str, ModelFamily] = {}


def register_model(family: ModelFamily) -> ModelFamily:
    """Declare a model family: `model.name=NAME` then builds, validates, trains and is probed like the paper's."""
    return register(MODEL_FAMILIES, family, "model family")


def model_family(name: str) -> ModelFamily:
    return lookup(MODEL_FAMILIES, name, "model.name", "model")


def norm_kwargs(norm_cfg) -> dict:
    noise = dict(norm_cfg.noise.constants) if norm_cfg.noise.enabled else None
    return dict(momentum=norm_cfg.momentum, eps=norm_cfg.eps, center_before_norm=norm_cfg.center_before_norm,
                noise=noise, **{key: norm_setting(norm_cfg, key) for key in ADDED_NORM_KEYS})


def build_model(cfg) -> nn.Module:
    return model_family(cfg.model.name).build(cfg)


def num_layers(cfg) -> int:
    """Number of conv/linear layers a config's model has, without building it."""
    return model_family(cfg.model.name).num_layers(cfg)


def _build_dln(cfg) -> nn.Module:
    m = cfg.model
    return DeepLinearNet(m.width, m.depth, cfg.norm.kind, init_gain=m.init_gain, bias=m.bias, **norm_kwargs(cfg.norm))


def _validate_dln(cfg) -> None:
    for key in ("model.width", "model.depth"):
        check_positive(cfg, key, integer=True)
    check_positive(cfg, "model.init_gain")
    check(not normalization(cfg.norm.kind).after_activation, "norm.kind", cfg.norm.kind,
          "a normalization placed between maps: the DLN has no nonlinearity to place one after")


def _stack_dln(models, cfg) -> nn.Module:
    n = cfg.norm
    return StackedDLN(models, n.kind, n.momentum, n.eps, n.center_before_norm, norm_setting(n, "statistics"),
                      norm_setting(n, "population_start"))


def _build_vgg(cfg) -> nn.Module:
    m = cfg.model
    return VGG(m.depth, m.width, cfg.norm.kind, m.num_classes, init=m.init, head=m.head, conv_bias=m.conv_bias,
               init_gain=m.init_gain, **norm_kwargs(cfg.norm))


# VGG first: figures over both families draw it first, as the paper does.
register_model(ModelFamily("vgg", _build_vgg, lambda cfg: sum(1 for item in LAYOUTS[cfg.model.depth] if item != "M")
                           + HEADS[cfg.model.head], ("cifar10",), "VGG", validate_vgg))
# The DLN: launch-bound and sensitive to TF32's rounding (its 25-map product amplifies it; bnlab.config.tf32).
register_model(ModelFamily("dln", _build_dln, lambda cfg: cfg.model.depth, ("gaussian",), "DLN", _validate_dln,
                           stack=_stack_dln, cost_as="dln", tf32=False))
