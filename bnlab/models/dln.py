"""The deep linear network (DLN) of the paper's appendix A: k square linear maps (no biases by default)."""

from __future__ import annotations

import torch
from torch import nn

from bnlab.norms import make_norm, normalization


class LinearBlock(nn.Module):
    """One linear map followed by its normalization slot (identity when there is none).

    The slot's output is what the activation probes record: the value after normalization and noise.
    """

    def __init__(self, width: int, norm: nn.Module, bias: bool = False):
        super().__init__()
        self.linear = nn.Linear(width, width, bias=False)
        if bias:  # zero, and added after construction: nn.Linear would draw a random one, shifting every later draw
            self.linear.bias = nn.Parameter(torch.zeros(width))
        self.norm = norm

    def forward(self, x):
        return self.norm(self.linear(x))


class DeepLinearNet(nn.Module):
    """x -> W_k ... W_1 x with square width x width matrices, Glorot-uniform times `init_gain`; with `bias`,
    each map adds a bias that starts at zero (a TensorFlow Dense layer's default).

    Normalization layers (when `norm_kind` is not "none") follow each of the first k - 1 maps; the last
    map is plain. Blocks are registered in forward order, so named_parameters() is in forward order,
    which the probes rely on.
    """

    def __init__(self, width: int = 10, depth: int = 25, norm_kind: str = "none", init_gain: float = 1.0,
                 bias: bool = False, **norm_kwargs):
        super().__init__()
        self.width, self.depth = width, depth
        blocks = []
        for i in range(depth):
            last = i == depth - 1
            norm = nn.Identity() if last else make_norm(norm_kind, width, **norm_kwargs)
            blocks.append(LinearBlock(width, norm, bias))
        self.blocks = nn.Sequential(*blocks)
        for block in self.blocks:
            # Glorot, as in the paper; init_gain scales it (calibration: the product of 25 maps grows as gain^25)
            nn.init.xavier_uniform_(block.linear.weight, gain=init_gain)
        reparametrize = normalization(norm_kind).reparametrize
        if reparametrize is not None:  # the maps a normalization follows: all but the last
            for block in self.blocks[:-1]:
                reparametrize(block.linear)

    def forward(self, x):
        return self.blocks(x)

    def activation_modules(self) -> dict[int, str]:
        """Layer number (from 1) -> name of the module whose output is that layer's activation."""
        return {i + 1: f"blocks.{i}.norm" for i in range(self.depth)}
