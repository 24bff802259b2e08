"""Model construction from config, and the paper's layer numbering."""

from __future__ import annotations

from torch import nn

from bnlab.models.dln import DeepLinearNet

MODELS = ("dln",)


def norm_kwargs(norm_cfg) -> dict:
    noise = dict(norm_cfg.noise.constants) if norm_cfg.noise.enabled else None
    return dict(momentum=norm_cfg.momentum, eps=norm_cfg.eps, center_before_norm=norm_cfg.center_before_norm,
                noise=noise)


def build_model(cfg) -> nn.Module:
    if cfg.model.name == "dln":
        return DeepLinearNet(cfg.model.width, cfg.model.depth, cfg.norm.kind, **norm_kwargs(cfg.norm))
    raise ValueError(f"model.name: unknown model {cfg.model.name!r}; allowed: {', '.join(MODELS)}")


def num_layers(cfg) -> int:
    """Number of conv/linear layers a config's model has, without building it."""
    if cfg.model.name == "dln":
        return cfg.model.depth
    raise ValueError(f"model.name: unknown model {cfg.model.name!r}; allowed: {', '.join(MODELS)}")
