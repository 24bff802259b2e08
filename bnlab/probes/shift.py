"""Internal covariate shift (Definition 2.1): how a layer's gradient changes when the layers before it
take their optimizer step."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from bnlab.probes.measurement import (
    LossFn,
    _device_of,
    _loss,
    _Measurement,
    _per_run,
    _runs,
    _single,
    _tensors_to_floats,
    numbered_layers,
)


def ics(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor,
        updated: Mapping[str, torch.Tensor], layers: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """Internal covariate shift of Definition 2.1, for every conv/linear layer (or those named in `layers`).

    The model holds the parameters theta_t; `updated` maps parameter names (as in named_parameters())
    to their values theta_{t+1} after the optimizer step. For layer i with weight W_i:
        G_i  = grad_{W_i} L(theta_t)
        G'_i = grad_{W_i} L(every parameter before W_i at t+1, W_i and everything after at t)
    on the same batch. Returns, in forward order, {module name: {"l2": ||G - G'||_2, "cos": cos(G, G')}}
    (for a stacked model, each a tensor with one entry per run).
    """
    return _tensors_to_floats(ics_tensors(model, loss_fn, inputs, targets, updated, layers))


def ics_tensors(model, loss_fn, inputs, targets, updated, layers=None) -> dict[str, dict[str, torch.Tensor]]:
    """`ics` with 0-d tensors instead of floats, so a training loop need not synchronize with the device."""
    named = list(model.named_parameters())
    names = [n for n, _ in named]
    position = {n: i for i, n in enumerate(names)}
    missing = [n for n in names if n not in updated]
    if missing:
        raise KeyError(f"ics: `updated` lacks parameters {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                       "pass the value of every parameter after the optimizer step")
    chosen = _choose_layers(model, layers)
    weights = [_weight_name(name, position) for name, _ in chosen]
    # where each layer's own parameters begin: the ones before it take their step for G'
    firsts = [min(position[n] for n in names if n.startswith(f"{name}.")) for name, _ in chosen]
    params = [p for _, p in named]
    runs = _runs(model)
    with _Measurement(model, _device_of(model, inputs)) as m:
        grads_t = torch.autograd.grad(_loss(model, loss_fn, inputs, targets, m).sum(),
                                      [params[position[w]] for w in weights])
        result, done = {}, 0  # params[:done] hold their updated values
        for (module_name, _), weight, first, g in zip(chosen, weights, firsts, grads_t, strict=True):
            j = position[weight]
            with torch.no_grad():
                for k in range(done, first):
                    params[k].copy_(updated[names[k]])
            done = max(done, first)
            if first == 0:  # nothing comes before the first layer: G' is G by definition
                g_mixed = g
            else:
                (g_mixed,) = torch.autograd.grad(_loss(model, loss_fn, inputs, targets, m).sum(), [params[j]])
            g_rows, mixed_rows = _per_run(g, runs), _per_run(g_mixed, runs)
            result[module_name] = {"l2": _single(torch.linalg.vector_norm(g_rows - mixed_rows, dim=1), runs),
                                   "cos": _single(F.cosine_similarity(g_rows, mixed_rows, dim=1), runs)}
    return result


def _weight_name(layer: str, position: dict[str, int]) -> str:
    """The parameter W_i of a layer: its weight, or under WeightNorm (torch's parametrization, g v / |v|) the
    direction v, which plays W's part."""
    for name in (f"{layer}.weight", f"{layer}.parametrizations.weight.original1"):
        if name in position:
            return name
    raise KeyError(f"ics: layer {layer!r} has no weight parameter")


def _choose_layers(model, layers):
    all_layers = numbered_layers(model)
    if layers is None:
        return all_layers
    wanted = set(layers)
    known = {name for name, _ in all_layers}
    unknown = sorted(wanted - known)
    if unknown:
        raise KeyError(f"unknown layer(s) {unknown}; conv/linear layers of this model: {sorted(known)}")
    return [(name, mod) for name, mod in all_layers if name in wanted]
