"""Model construction from config, and the paper's layer numbering."""

from __future__ import annotations

from torch import nn

from bnlab.models.dln import DeepLinearNet
from bnlab.models.vgg import HEADS, LAYOUTS, VGG

MODELS = ("dln", "vgg")


def norm_kwargs(norm_cfg) -> dict:
    noise = dict(norm_cfg.noise.constants) if norm_cfg.noise.enabled else None
    return dict(momentum=norm_cfg.momentum, eps=norm_cfg.eps, center_before_norm=norm_cfg.center_before_norm,
                noise=noise)


def build_model(cfg) -> nn.Module:
    m = cfg.model
    if m.name == "dln":
        return DeepLinearNet(m.width, m.depth, cfg.norm.kind, init_gain=m.init_gain, bias=m.bias,
                             **norm_kwargs(cfg.norm))
    if m.name == "vgg":
        return VGG(m.depth, m.width, cfg.norm.kind, m.num_classes, init=m.init, head=m.head, conv_bias=m.conv_bias,
                   init_gain=m.init_gain, **norm_kwargs(cfg.norm))
    raise ValueError(f"model.name: unknown model {m.name!r}; allowed: {', '.join(MODELS)}")


def num_layers(cfg) -> int:
    """Number of conv/linear layers a config's model has, without building it."""
    if cfg.model.name == "dln":
        return cfg.model.depth
    if cfg.model.name == "vgg":
        return sum(1 for item in LAYOUTS[cfg.model.depth] if item != "M") + HEADS[cfg.model.head]
    raise ValueError(f"model.name: unknown model {cfg.model.name!r}; allowed: {', '.join(MODELS)}")
