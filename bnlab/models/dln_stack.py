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

import torch
from torch import nn

from bnlab.models.dln import DeepLinearNet
from bnlab.norms import normalization, statistics_kwargs


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
                 center_before_norm: bool = False, statistics: str = "batch", population_start: str = "prior"):
        super().__init__()
        build_stacked = normalization(norm_kind).build_stacked
        if build_stacked is None:
            raise ValueError(f"StackedDLN: normalization {norm_kind!r} has no stacked form (bnlab.norms)")
        self.runs, self.width, self.depth = len(models), models[0].width, models[0].depth
        bias = models[0].blocks[0].linear.bias is not None
        blocks = []
        for i in range(self.depth):
            last = i == self.depth - 1
            norm = nn.Identity() if last else build_stacked((self.runs, self.width), momentum=momentum, eps=eps,
                                                            center_before_norm=center_before_norm,
                                                            **statistics_kwargs(norm_kind, statistics,
                                                                                population_start))
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
