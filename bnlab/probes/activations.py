"""Activation statistics: the distribution of sampled units' values over a batch, and the per-unit
standard deviation of each BatchNorm layer's input (section 4's sigma_j)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from bnlab.probes.measurement import _constant, _device_of, _is_layer, _Measurement, _runs, batchnorm_layers

DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def sample_units(model: nn.Module, modules: Mapping, count: int, generator) -> dict:
    """Pick `count` random units (channels) of each module's output, once per run: {key: LongTensor}. For
    a stacked model `generator` is a list, one per run, and each value has a row per run."""
    if _runs(model):
        per_run = [_sample_units_of_run(model, modules, count, g) for g in generator]
        return {key: torch.stack([units[key] for units in per_run]) for key in modules}
    return _sample_units_of_run(model, modules, count, generator)


def _sample_units_of_run(model: nn.Module, modules: Mapping, count: int, generator: torch.Generator) -> dict:
    chosen = {}
    for key, name in modules.items():
        layer = _producing_layer(model, name)
        width = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
        chosen[key] = torch.randperm(width, generator=generator)[:count].sort().values
    return chosen


def _producing_layer(model: nn.Module, module_name: str) -> nn.Module:
    """The last conv/linear layer at or before `module_name` in forward order (it fixes the unit count)."""
    found = None
    for name, m in model.named_modules():
        if _is_layer(m):
            found = m
        if name == module_name:
            if found is None:
                raise KeyError(f"no conv/linear layer precedes module {module_name!r}")
            return found
    raise KeyError(f"model has no module {module_name!r}")


def _capture(model: nn.Module, inputs: torch.Tensor, modules: Mapping[object, nn.Module], inputs_of: bool) -> dict:
    """One measured forward pass; returns {key: output (or first input) of modules[key]}, detached."""
    captured = {}

    def hook_for(key):
        def hook(_module, args, output=None):
            captured[key] = (args[0] if inputs_of else output).detach()
        return hook

    handles = [m.register_forward_pre_hook(hook_for(k)) if inputs_of else m.register_forward_hook(hook_for(k))
               for k, m in modules.items()]
    try:
        with _Measurement(model, _device_of(model, inputs)) as m, torch.no_grad():
            m.replay()
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def activation_stats(model: nn.Module, inputs: torch.Tensor, modules: Mapping, units: Mapping,
                     quantiles: Sequence[float] = DEFAULT_QUANTILES) -> dict:
    """Distribution over the batch (and spatial positions) of chosen units of chosen modules' outputs.

    `modules` maps a key (e.g. the paper's layer number) to a module name; `units` maps the same key to
    the unit (channel) indices to record. Returns {key: {"mean", "var", "quantiles"}}, each a tensor with
    one row per unit ("quantiles" has one column per entry of `quantiles`), and for a stacked model a
    leading run axis (its units then hold a row of indices per run).
    """
    outputs = _capture(model, inputs, {k: model.get_submodule(n) for k, n in modules.items()}, inputs_of=False)
    stats = {}
    for key, act in outputs.items():
        chosen = units[key]
        if chosen.device != act.device:  # ProbeSchedule keeps them on the model's device: no copy per step
            chosen = chosen.to(act.device)
        if _runs(model):  # act (runs, units, samples), chosen (runs, count): stats get a leading run axis
            values = act.gather(1, chosen[..., None].expand(-1, -1, act.shape[-1])).double()
        else:
            values = act.index_select(1, chosen).transpose(0, 1).reshape(len(chosen), -1).double()
        q = _constant(tuple(quantiles), values.dtype, values.device)
        stats[key] = {"mean": values.mean(-1), "var": values.var(-1, unbiased=False),
                      "quantiles": torch.quantile(values, q, dim=-1).movedim(0, -1)}
    return stats


def bn_input_sigma(model: nn.Module, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-unit standard deviation (over batch and spatial positions, biased) of each BatchNorm layer's
    input: the sigma_j that BatchNorm divides by (paper section 4). {module name: tensor (units,)}; for a
    stacked model (runs, units), its inputs being (runs, units, samples)."""
    layer_inputs = _capture(model, inputs, dict(batchnorm_layers(model)), inputs_of=True)
    dims = [-1] if _runs(model) else None
    return {name: x.double().var(dims or [0, *range(2, x.dim())], unbiased=False).sqrt()
            for name, x in layer_inputs.items()}
