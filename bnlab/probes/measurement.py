"""What every probe shares: the paper's layer numbering, stacked models' run axis, and the measurement
context that leaves a model as it was found (modes, buffers, parameters, random generators, TF32)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from bnlab.norms import BatchNoise, BatchNorm, LpNorm
from bnlab.util.rng import rng_state, set_rng_state

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def numbered_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The conv/linear layers of `model` in forward order; the paper's layer #n is entry n - 1."""
    return [(name, m) for name, m in model.named_modules() if _is_layer(m)]


def _is_layer(m: nn.Module) -> bool:
    return isinstance(m, (nn.Linear, nn.Conv2d)) or getattr(m, "counts_as_layer", False)


def _runs(model: nn.Module) -> int | None:
    """S for a model that stacks S independent runs (bnlab.models.dln_stack: every parameter, activation
    and loss has a leading run axis, and every probe result gets one); None for an ordinary model."""
    return getattr(model, "runs", None)


def _per_run(t: torch.Tensor, runs: int | None) -> torch.Tensor:
    """`t` as one row per run (a single row for an ordinary model), for per-run norms and cosines."""
    return t.reshape(runs or 1, -1)


@functools.lru_cache(maxsize=64)
def _constant(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant tensor on `device`, made once: made at every call, it would be a copy from the host
    at every probe step, and on a GPU such a copy makes the host wait."""
    return torch.tensor(values, dtype=dtype, device=device)


def _single(t: torch.Tensor, runs: int | None) -> torch.Tensor:
    """Drop the run axis of a per-run result of an ordinary model (0-d, as the probes always returned)."""
    return t if runs else t.squeeze(0)


MODES = ("train", "eval")


class _Measurement:
    """Train mode (batch statistics; or eval mode, running statistics, with mode="eval"), one replayed
    random draw, strict fp32 (no TF32), and buffers, parameters, modes and the TF32 switches restored on
    exit."""

    def __init__(self, model: nn.Module, device: torch.device, mode: str = "train"):
        if mode not in MODES:
            raise ValueError(f"mode must be 'train' (batch statistics) or 'eval' (running statistics), got {mode!r}")
        self.model, self.device, self.mode = model, device, mode

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.buffers = [(b, b.detach().clone()) for b in self.model.buffers()]
        self.params = [(p, p.detach().clone()) for p in self.model.parameters()]
        self.rng = rng_state(self.device)
        self.tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        self.model.train(self.mode == "train")
        return self

    def replay(self):
        """Reset the random generators to the state they had when the measurement began."""
        set_rng_state(self.rng, self.device)

    def __exit__(self, *exc):
        with torch.no_grad():
            for tensor, saved in self.buffers + self.params:
                tensor.copy_(saved)
        for module, mode in self.modes:
            module.training = mode
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.tf32
        self.replay()
        return False


def _device_of(model: nn.Module, inputs: torch.Tensor) -> torch.device:
    return inputs.device if isinstance(inputs, torch.Tensor) else next(model.parameters()).device


def _loss(model, loss_fn, inputs, targets, m: _Measurement) -> torch.Tensor:
    """The loss (per run, for a stacked model). Gradients are taken of its sum: each run's parameters
    affect only that run's loss, so they get exactly that run's gradient."""
    m.replay()
    return loss_fn(model(inputs), targets)


def modes_differ(model: nn.Module) -> bool:
    """Whether `model` computes another function in eval mode than in train mode: it has normalization with
    running statistics (BatchNorm, bnlab's l_p layers, any module with a `running_*` buffer of its own), noise
    or dropout. Without any, a measurement in eval mode repeats the train-mode one."""
    kinds = (BatchNorm, nn.modules.batchnorm._BatchNorm, LpNorm, BatchNoise, nn.modules.dropout._DropoutNd)
    return any(isinstance(m, kinds) or any(name.startswith("running_") for name, _ in m.named_buffers(recurse=False))
               for m in model.modules())


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """BatchNorm modules (bnlab's, torch's and a stacked model's, a subclass) in forward order."""
    kinds = (BatchNorm, nn.modules.batchnorm._BatchNorm)
    return [(name, m) for name, m in model.named_modules() if isinstance(m, kinds)]


def _tensors_to_floats(result: dict) -> dict:
    keys = [(layer, stat) for layer, stats in result.items() for stat in stats]
    if not keys:
        return {}
    values = torch.stack([result[layer][stat].detach().double() for layer, stat in keys]).tolist()
    out: dict = {}
    for (layer, stat), value in zip(keys, values, strict=True):
        out.setdefault(layer, {})[stat] = value
    return out
