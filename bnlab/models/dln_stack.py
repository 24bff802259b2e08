"""Several DLN runs that differ only in their seed, trained as one model.

A 25-layer DLN of 10x10 maps is launch-bound: one run's step is some 300 tiny operations, each costing
its dispatch overhead and next to no arithmetic. Stacking S runs makes every operation S times bigger for
about the same overhead: the maps become one batched product (S, 10, 10) @ (S, 10, N) and the
normalizations one per-unit operation over S * 10 units. Activations are laid out (S, width, N), units
along rows and samples contiguous, so a unit's batch statistics are a contiguous reduction.

The runs stay independent: run s's parameters are slice s of every stacked tensor, its loss depends on
that slice only, and the gradient of the summed losses with respect to slice s is the gradient of run s's
own loss. `member_state_dict(s)` and `load_member_state_dict` convert to and from the state dict of the
`DeepLinearNet` the run would train alone, so a stacked run's checkpoint is an ordinary run's checkpoint.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bnlab.models.dln import DeepLinearNet
from bnlab.norms import BatchNorm, LpNorm

STACKABLE_NORMS = ("none", "batch", "l1", "l2", "linf")


class StackedLinear(nn.Module):
    """S independent width x width maps, with or without bias: (S, width, N) -> (S, width, N)."""

    counts_as_layer = True  # a conv/linear layer for the probes' numbering (bnlab.probes.numbered_layers)

    def __init__(self, runs: int, width: int, bias: bool = False):
        super().__init__()
        self.out_features = width
        self.weight = nn.Parameter(torch.empty(runs, width, width))
        self.bias = nn.Parameter(torch.empty(runs, width)) if bias else None

    def forward(self, h):
        if self.bias is None:
            return torch.bmm(self.weight, h)
        return torch.baddbmm(self.bias[..., None], self.weight, h)


class StackedBatchNorm(BatchNorm):
    """bnlab's BatchNorm on each of S runs' units (parameters and statistics (S, width)), through torch's
    fused kernel on all S * width units at once."""

    def forward(self, h):
        runs, width, n = h.shape
        units = runs * width
        return F.batch_norm(h.view(1, units, n), self.running_mean.view(units), self.running_var.view(units),
                            self.weight.view(units), self.bias.view(units), self.training, self.momentum,
                            self.eps).view(runs, width, n)


class StackedLpNorm(LpNorm):
    """bnlab's l_p normalization on each of S runs' units (parameters and statistics (S, width)): the same
    forward, with a unit's statistics over the last (sample) dimension."""

    def _statistics_dims(self, x):
        return [-1]

    def _expand(self, v, x):
        return v[..., None]


def stacked_norm(kind: str, runs: int, width: int, momentum: float, eps: float, center_before_norm: bool):
    if kind == "batch":
        return StackedBatchNorm((runs, width), momentum, eps)
    p = {"l1": 1.0, "l2": 2.0, "linf": math.inf}[kind]
    return StackedLpNorm((runs, width), p, center_before_norm, momentum, eps)


class StackedBlock(nn.Module):
    def __init__(self, linear: nn.Module, norm: nn.Module):
        super().__init__()
        self.linear, self.norm = linear, norm

    def forward(self, h):
        return self.norm(self.linear(h))


class StackedDLN(nn.Module):
    """The DeepLinearNets `models` (same width, depth and normalization) as one model on (S, width, N)
    inputs. Module and parameter names are those of DeepLinearNet, each tensor with a leading run axis."""

    def __init__(self, models: list[DeepLinearNet], norm_kind: str, momentum: float = 0.1, eps: float = 1e-5,
                 center_before_norm: bool = False):
        super().__init__()
        if norm_kind not in STACKABLE_NORMS:
            raise ValueError(f"StackedDLN: normalization {norm_kind!r} cannot be stacked; "
                             f"allowed: {', '.join(STACKABLE_NORMS)}")
        self.runs, self.width, self.depth = len(models), models[0].width, models[0].depth
        bias = models[0].blocks[0].linear.bias is not None
        blocks = []
        for i in range(self.depth):
            plain = i == self.depth - 1 or norm_kind == "none"
            norm = nn.Identity() if plain else stacked_norm(norm_kind, self.runs, self.width, momentum, eps,
                                                            center_before_norm)
            blocks.append(StackedBlock(StackedLinear(self.runs, self.width, bias), norm))
        self.blocks = nn.Sequential(*blocks)
        for s, model in enumerate(models):
            self.load_member_state_dict(s, model.state_dict())

    def forward(self, h):
        return self.blocks(h)

    def activation_modules(self) -> dict[int, str]:
        return {i + 1: f"blocks.{i}.norm" for i in range(self.depth)}

    def member_state_dict(self, s: int) -> dict[str, torch.Tensor]:
        """Run s's state dict, as its own DeepLinearNet would have it."""
        return {name: tensor[s].clone() for name, tensor in self.state_dict().items()}

    def load_member_state_dict(self, s: int, state: dict[str, torch.Tensor]) -> None:
        own = self.state_dict()
        if set(state) != set(own):
            raise KeyError(f"state dict does not fit this stacked DLN: missing {sorted(set(own) - set(state))[:3]}, "
                           f"unexpected {sorted(set(state) - set(own))[:3]}")
        with torch.no_grad():
            for name, tensor in own.items():
                tensor[s].copy_(state[name])
