"""The loss landscape along the gradient (section 3.2): the loss and the gradient's change at several step
sizes, and the "effective" beta-smoothness."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from bnlab.probes.measurement import LossFn, _constant, _device_of, _loss, _Measurement, _per_run, _runs, _single


def landscape_multipliers(start: float, stop: float, num: int, spacing: str) -> list[float]:
    """The set M of step multipliers: `num` points from start to stop, linear or log-spaced."""
    if spacing == "linear":
        values = torch.linspace(start, stop, num, dtype=torch.float64)
    elif spacing == "log":
        values = torch.logspace(math.log10(start), math.log10(stop), num, dtype=torch.float64)
    else:
        raise ValueError(f"spacing must be 'linear' or 'log', got {spacing!r}")
    return values.tolist()


def landscape(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor, lr: float,
              multipliers: Sequence[float], direction: str = "gradient",
              generator: torch.Generator | None = None) -> dict:
    """The loss landscape along the gradient (paper section 3.2 and appendix A.2.2).

    With g = grad L(theta) on this batch and, for each m in `multipliers`, theta_m = theta - m * lr * v
    (v = g, or for direction="random" a Gaussian direction of the same norm as g, drawn from `generator`):
        loss_m = L(theta_m),  d_m = ||grad L(theta_m) - g||_2  ("gradient predictiveness"),
        beta = max_m d_m / ||m * lr * v||_2                    ("effective" beta-smoothness).
    Gradients are over every parameter. Returns {"multipliers", "loss", "grad_diff": lists, "beta": float}.
    """
    out = landscape_tensors(model, loss_fn, inputs, targets, lr, multipliers, direction, generator)
    values = torch.stack([out["loss"], out["grad_diff"], out["beta"].expand_as(out["loss"])]).tolist()
    return {"multipliers": list(multipliers), "loss": values[0], "grad_diff": values[1], "beta": values[2][0]}


def landscape_tensors(model, loss_fn, inputs, targets, lr, multipliers, direction="gradient", generator=None):
    """`landscape` with tensors instead of floats (no device synchronization). For a stacked model every
    result has a run axis (loss and grad_diff: (multipliers, runs); beta: (runs,)) and `generator` is a
    list of one generator per run."""
    if direction not in ("gradient", "random"):
        raise ValueError(f"direction must be 'gradient' or 'random', got {direction!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    runs = _runs(model)

    def norm_per_run(tensors):  # the l2 norm of all of a run's entries
        return torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(_per_run(t, runs), dim=1) for t in tensors]), dim=0)

    with _Measurement(model, _device_of(model, inputs)) as m:
        theta = [p.detach().clone() for p in params]
        grad = torch.autograd.grad(_loss(model, loss_fn, inputs, targets, m).sum(), params)
        grad_norm = norm_per_run(grad)
        step = grad
        if direction == "random":
            noise = _random_direction(grad, generator, runs)
            scale = grad_norm / norm_per_run(noise)
            step = [n * (scale.view(-1, *[1] * (n.dim() - 1)) if runs else scale) for n in noise]
        losses, diffs = [], []
        for mult in multipliers:
            with torch.no_grad():
                for p, t, s in zip(params, theta, step, strict=True):
                    torch.add(t, s, alpha=-mult * lr, out=p)
            loss_m = _loss(model, loss_fn, inputs, targets, m)
            grad_m = torch.autograd.grad(loss_m.sum(), params)
            diffs.append(_single(norm_per_run([a - b for a, b in zip(grad_m, grad, strict=True)]), runs))
            losses.append(loss_m.detach())
    losses, diffs = torch.stack(losses), torch.stack(diffs)
    distance = _constant(tuple(multipliers), diffs.dtype, diffs.device) * lr
    distance = distance.view(-1, *[1] * (diffs.dim() - 1)) * _single(grad_norm, runs)
    return {"loss": losses, "grad_diff": diffs, "beta": (diffs / distance).amax(0)}


def _random_direction(grad, generator, runs):
    """A Gaussian tensor per gradient tensor; for a stacked model run s's slices come from generator[s] in
    parameter order, the same numbers that run would draw alone."""
    if not runs:
        return [torch.randn(g.shape, generator=generator, dtype=g.dtype).to(g.device) for g in grad]
    draws = [[torch.randn(g.shape[1:], generator=gen, dtype=g.dtype) for g in grad] for gen in generator]
    return [torch.stack([draws[s][i] for s in range(runs)]).to(g.device) for i, g in enumerate(grad)]
