"""TF32 emulated on a CPU, as a BNLAB_PLUGINS module: does TF32 (on for VGG on CUDA, `runtime.tf32: auto`)
move a verdict? (issue 27)

On CUDA, TF32 tensor cores round the operands of a convolution or matrix product to TF32's 10-bit mantissa
(fp32's 8-bit exponent) and accumulate in fp32. Imported as a plugin, this module makes every F.conv2d and
F.linear of the process round its input and its weight that way (to nearest, ties to even) before the fp32
product. The gradient passes the rounding straight through; the backward pass's products use the rounded
operands saved by the forward pass but do not round the incoming gradient, as TF32 would: a partial
emulation.

    BNLAB_PLUGINS=tf32_emulation PYTHONPATH=scripts BNLAB_RUNS=/tmp/tf32-runs \\
        .venv/bin/bnlab-figure figure1 --scale smoke --train --out /tmp/tf32-figure1
    python scripts/compare_verdicts.py results/smoke/claims.json /tmp/tf32-figure1/claims.json

A run's key does not know of the plugin: keep its runs in a store of their own (BNLAB_RUNS).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DROPPED_BITS = 13  # fp32 keeps 23 mantissa bits, TF32 10


def round_to_tf32(t: torch.Tensor) -> torch.Tensor:
    """fp32 values rounded to the nearest TF32 value (ties to even), still stored as fp32; inf and nan stay."""
    if t.dtype != torch.float32:
        return t
    bits = t.contiguous().view(torch.int32)
    half = 1 << (DROPPED_BITS - 1)
    odd = (bits >> DROPPED_BITS) & 1
    rounded = ((bits + (half - 1) + odd) & ~((1 << DROPPED_BITS) - 1)).view(torch.float32)
    return torch.where(torch.isfinite(t), rounded.view_as(t), t)


def _straight_through(t: torch.Tensor) -> torch.Tensor:
    return t + (round_to_tf32(t.detach()) - t.detach())


_conv2d, _linear = F.conv2d, F.linear


def conv2d(input, weight, bias=None, *args, **kwargs):
    return _conv2d(_straight_through(input), _straight_through(weight), bias, *args, **kwargs)


def linear(input, weight, bias=None):
    return _linear(_straight_through(input), _straight_through(weight), bias)


# nn.Conv2d and nn.Linear call these through torch.nn.functional: every model of the process is covered
F.conv2d, F.linear = conv2d, linear
