"""Probes of SPEC section 3: internal covariate shift, the loss landscape along the gradient, and
activation statistics. They work on any torch.nn.Module under one assumption:

    the model's forward pass uses its parameters in the order of `model.named_parameters()`
    (true of every nn.Sequential and of models that register submodules in the order they call them).

"Layers" are the model's nn.Linear and nn.Conv2d modules in that order (and modules that set
`counts_as_layer`); the paper's layer #n is the n-th of them.

A model with a `runs` attribute stacks that many independent runs (bnlab.models.dln_stack): its loss
function returns one loss per run, its parameters and activations have a leading run axis, and every
result gets one.

Every probe
- runs the model in training mode (batch statistics: exactly the function being optimized),
- computes in strict fp32 on CUDA (TF32 off for its duration, whatever the training step uses): TF32 rounds
  products to about 1e-3 relative, and the gradient differences the probes report go below that,
- leaves the model's parameters, buffers (running statistics included) and train/eval mode of every
  submodule exactly as it found them,
- replays one random draw: torch's generators are reset to the state they had when the probe was called
  before every forward pass, so a stochastic layer (noisy BatchNorm, dropout) sees the same draw at every
  point of one measurement, and they are left in that state afterwards, so probing does not change the
  random stream of the training run.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bnlab.norms import BatchNorm
from bnlab.util.rng import rng_state, set_rng_state

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


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


class _Measurement:
    """Train mode, one replayed random draw, strict fp32 (no TF32), and buffers, parameters, modes and the
    TF32 switches restored on exit."""

    def __init__(self, model: nn.Module, device: torch.device):
        self.model, self.device = model, device

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.buffers = [(b, b.detach().clone()) for b in self.model.buffers()]
        self.params = [(p, p.detach().clone()) for p in self.model.parameters()]
        self.rng = rng_state(self.device)
        self.tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        self.model.train()
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
    weights = [f"{name}.weight" for name, _ in chosen]
    params = [p for _, p in named]
    runs = _runs(model)
    with _Measurement(model, _device_of(model, inputs)) as m:
        grads_t = torch.autograd.grad(_loss(model, loss_fn, inputs, targets, m).sum(),
                                      [params[position[w]] for w in weights])
        result, done = {}, 0  # params[:done] hold their updated values
        for (module_name, _), weight, g in zip(chosen, weights, grads_t, strict=True):
            j = position[weight]
            with torch.no_grad():
                for k in range(done, j):
                    params[k].copy_(updated[names[k]])
            done = max(done, j)
            if j == 0:  # nothing comes before the first weight: G' is G by definition
                g_mixed = g
            else:
                (g_mixed,) = torch.autograd.grad(_loss(model, loss_fn, inputs, targets, m).sum(), [params[j]])
            g_rows, mixed_rows = _per_run(g, runs), _per_run(g_mixed, runs)
            result[module_name] = {"l2": _single(torch.linalg.vector_norm(g_rows - mixed_rows, dim=1), runs),
                                   "cos": _single(F.cosine_similarity(g_rows, mixed_rows, dim=1), runs)}
    return result


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


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """BatchNorm modules (bnlab's, torch's and a stacked model's, a subclass) in forward order."""
    kinds = (BatchNorm, nn.modules.batchnorm._BatchNorm)
    return [(name, m) for name, m in model.named_modules() if isinstance(m, kinds)]


def bn_input_sigma(model: nn.Module, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-unit standard deviation (over batch and spatial positions, biased) of each BatchNorm layer's
    input: the sigma_j that BatchNorm divides by (paper section 4). {module name: tensor (units,)}; for a
    stacked model (runs, units), its inputs being (runs, units, samples)."""
    layer_inputs = _capture(model, inputs, dict(batchnorm_layers(model)), inputs_of=True)
    dims = [-1] if _runs(model) else None
    return {name: x.double().var(dims or [0, *range(2, x.dim())], unbiased=False).sqrt()
            for name, x in layer_inputs.items()}


def _tensors_to_floats(result: dict) -> dict:
    keys = [(layer, stat) for layer, stats in result.items() for stat in stats]
    if not keys:
        return {}
    values = torch.stack([result[layer][stat].detach().double() for layer, stat in keys]).tolist()
    out: dict = {}
    for (layer, stat), value in zip(keys, values, strict=True):
        out.setdefault(layer, {})[stat] = value
    return out

