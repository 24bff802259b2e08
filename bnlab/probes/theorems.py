"""Both sides of the paper's Theorems 4.1 and 4.2, measured for every BatchNorm layer of a real network.

For one unit j of a BatchNorm layer, over the m values of its batch (m = batch x positions for a conv layer):
y is the layer's input (the pre-normalization activations), y-hat = (y - mean) / sigma with
sigma = sqrt(var + eps) (var biased, as BatchNorm uses), z = gamma y-hat + beta its output, g = dL/dz the
gradient with respect to the output ("grad_y L" of the paper's identical non-BN network), and
v = dL/dy the gradient with respect to the input.

Theorem 4.1 as printed:  |v|^2 <= gamma^2/sigma^2 (|g|^2 - <1,g>^2 / m - <g,y-hat>^2 / sqrt(m)).
Derived (step by step in tests/test_theorems.py): BatchNorm's backward pass is v = gamma/sigma P g with
P = I - 1 1^T/m - y-hat y-hat^T/m. With eps = 0, |y-hat|^2 = m and P is the orthogonal projection off 1 and
y-hat, so |v|^2 = gamma^2/sigma^2 (|g|^2 - <1,g>^2/m - <g,y-hat>^2/m): an equality, with 1/m in the last term.
The proof's step from (8) to (9) divides <g,y-hat>^2 by |y-hat|, not |y-hat|^2 = m. Since 1/sqrt(m) > 1/m,
the printed bound is *below* the true value whenever <g,y-hat> != 0: the printed inequality fails. With
eps > 0 the 1/m bound holds with a little room: |v|^2 = gamma^2/sigma^2 (|g|^2 - <1,g>^2/m -
<g,y-hat>^2/m (2 - |y-hat|^2/m)), and |y-hat|^2 < m.

Theorem 4.2: v^T (d^2 L / dy dy) v <= gamma^2/sigma^2 v^T H v - gamma/(m sigma^2) <g,y-hat> |v|^2, with H the
Hessian with respect to the unit's output z. Expanding z(y + t v) to second order in t (v is orthogonal to 1
and y-hat when eps = 0) gives this as an equality, the paper's (50). With eps > 0 (BatchNorm's 1e-5), v is
orthogonal to 1 but not to y-hat: <y-hat, v> = gamma/sigma <g,y-hat> eps/sigma^2. Along y + t v the mean stays,
sigma(t)^2 = sigma^2 + 2 t a + t^2 |v|^2/m with a = <y - mean, v>/m, and the exact second derivative is
    w^T H w + gamma [<g,y-hat> (3 a^2/sigma^4 - |v|^2/(m sigma^2)) - 2 a <g,v>/sigma^3],
w = gamma/sigma (v - <y-hat,v>/m y-hat) the first-order change of z (derived in tests/test_theorems.py, checked
against dense Hessians). The paper's right-hand side exceeds it by eps terms of order eps/sigma^2 whose sign is
that of <g,y-hat>: where <g,y-hat> < 0 the printed bound fails by them, most at units of small variance. The
probe reports both right-hand sides ("rhs42", as printed; "rhs42_exact", eps included), so each measured gap
splits into eps (rhs42 - rhs42_exact) and rounding (rhs42_exact - lhs42).

Each side is measured: |v|^2 and v^T (d^2L/dy dy) v by autograd through the BatchNorm layer (Hessian-vector
products, double backward), the right-hand sides from g, y and H v (products with respect to z). The
contract of every probe holds (one forward pass, batch statistics, the model left as found).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bnlab.probes.measurement import LossFn, _device_of, _loss, _Measurement, _runs, batchnorm_layers


def theorem_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The BatchNorm layers the theorems describe: plain BatchNorm (bnlab's or torch's), not noisy BatchNorm,
    whose output is not gamma y-hat + beta."""
    return [(name, m) for name, m in batchnorm_layers(model) if getattr(m, "noise", None) is None]


def batchnorm_theorems(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor,
                       units: int | None = 4, generator: torch.Generator | None = None) -> dict[str, dict]:
    """Both sides of Theorems 4.1 (every unit) and 4.2 (`units` units drawn from `generator`, or all when
    None) for each plain BatchNorm layer, on one batch in training mode (batch statistics).

    Returns {layer name: {...}} with float64 CPU tensors, one entry per unit:
      "m" (int), "scale" gamma^2/sigma^2, "first" gamma^2/sigma^2 |g|^2, "mean_term" gamma^2/sigma^2 <1,g>^2/m,
      "corr_term" gamma^2/sigma^2 <g,y-hat>^2/m, "corr" gamma <g,y-hat> (the sign Theorem 4.2 needs),
      "lhs41" |v|^2, "rhs41" first - mean_term - corr_term (derived), "rhs41_printed" first - mean_term -
      sqrt(m) corr_term (as printed);
      and for the drawn units ("units42": their indices): "lhs42" v^T (d^2L/dy dy) v, "hessian_term"
      gamma^2/sigma^2 v^T H v, "reduction42" gamma/(m sigma^2) <g,y-hat> |v|^2, "rhs42" their difference (the
      printed bound), "rhs42_exact" the exact second derivative with eps included (the module docstring).
    """
    if _runs(model):
        raise ValueError("the theorem probe measures one run; measure each run of a stacked model as its own model")
    if units is not None and not (isinstance(units, int) and units >= 1):
        raise ValueError(f"units must be a positive integer or None (every unit), got {units!r}")
    layers = theorem_layers(model)
    if not layers:
        return {}
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name):
        def capture(module, args, output):
            captured[name] = (args[0], output)
            # Downstream sees a copy, so that an in-place op after the layer (ReLU(inplace=True)) cannot
            # rewrite the output whose gradient and Hessian are measured.
            return output.clone()
        return capture

    handles = [module.register_forward_hook(hook(name)) for name, module in layers]
    try:
        with _Measurement(model, _device_of(model, inputs), "train") as m:
            loss = _loss(model, loss_fn, inputs, targets, m).sum()
            missing = [name for name, _ in layers if name not in captured or not captured[name][0].requires_grad]
            if missing:
                raise ValueError(f"BatchNorm layers {missing} saw no input that depends on a parameter: the theorems "
                                 "are about a layer's pre-normalization activations y = W x")
            tensors = [t for name, _ in layers for t in captured[name]]
            grads = torch.autograd.grad(loss, tensors, create_graph=True)
            out = {}
            for i, (name, module) in enumerate(layers):
                y, z = captured[name]
                grad_y, grad_z = grads[2 * i], grads[2 * i + 1]
                out[name] = _layer(module, y, z, grad_y, grad_z, units, generator)
    finally:
        for handle in handles:
            handle.remove()
    return out


def _per_unit(t: torch.Tensor) -> torch.Tensor:
    """(units, m): each unit's values over its batch (and positions), from (N, C) or (N, C, H, W)."""
    return t.detach().double().transpose(0, 1).reshape(t.shape[1], -1)


def _layer(module, y, z, grad_y, grad_z, units, generator) -> dict:
    ys, g, v = _per_unit(y), _per_unit(grad_z), _per_unit(grad_y)
    m = ys.shape[1]
    centred = ys - ys.mean(1, keepdim=True)
    sigma2 = centred.square().mean(1) + module.eps
    y_hat = centred / sigma2.sqrt()[:, None]
    weight = getattr(module, "weight", None)
    gamma = torch.ones_like(sigma2) if weight is None else weight.detach().double().to(ys.device)
    scale = gamma.square() / sigma2
    g_dot_yhat = (g * y_hat).sum(1)
    first = scale * g.square().sum(1)
    mean_term = scale * g.sum(1).square() / m
    corr_term = scale * g_dot_yhat.square() / m
    lhs41 = v.square().sum(1)
    out = {"m": m, "scale": scale, "first": first, "mean_term": mean_term, "corr_term": corr_term,
           "corr": gamma * g_dot_yhat, "lhs41": lhs41, "rhs41": first - mean_term - corr_term,
           "rhs41_printed": first - mean_term - math.sqrt(m) * corr_term}
    channels = ys.shape[0]
    if units is None or units >= channels:
        chosen = torch.arange(channels)
    else:
        chosen = torch.randperm(channels, generator=generator)[:units].sort().values
    lhs42, hessian_term, exact_quadratic, grad_dot_v = [], [], [], []
    for c in chosen.tolist():
        direction = torch.zeros_like(grad_y)
        direction[:, c] = grad_y.detach()[:, c]  # v of unit c, zero elsewhere: the unit's own m x m block
        hv_y = torch.autograd.grad(grad_y, y, grad_outputs=direction, retain_graph=True)[0]
        hv_z = torch.autograd.grad(grad_z, z, grad_outputs=direction, retain_graph=True)[0]
        lhs42.append(float((direction.double() * hv_y.double()).sum()))
        hessian_term.append(float(scale[c]) * float((direction.double() * hv_z.double()).sum()))
        # With eps > 0, v is not orthogonal to y-hat, and z moves along w = gamma/sigma (v - <y-hat,v>/m y-hat)
        # (the exact first-order change of z): the exact curvature term is w^T H w, not gamma^2/sigma^2 v^T H v.
        vc = v[c]
        w = gamma[c] / sigma2[c].sqrt() * (vc - (y_hat[c] @ vc) / m * y_hat[c])
        along_w = torch.zeros_like(grad_z)
        along_w[:, c] = w.to(grad_z.dtype).view_as(grad_z[:, c])
        hw_z = torch.autograd.grad(grad_z, z, grad_outputs=along_w, retain_graph=True)[0]
        exact_quadratic.append(float((along_w.double() * hw_z.double()).sum()))
        grad_dot_v.append(float(g[c] @ vc))
    picked = chosen.to(ys.device)
    reduction = gamma[picked] / (m * sigma2[picked]) * g_dot_yhat[picked] * lhs41[picked]
    hessian_term = torch.tensor(hessian_term, dtype=torch.float64, device=ys.device)
    # The second-order change of z along v, exactly (module docstring): with a = <y - mean, v>/m,
    # gamma [<g,y-hat> (3 a^2/sigma^4 - |v|^2/(m sigma^2)) - 2 a <g,v>/sigma^3]; at eps = 0, a = 0 and this is
    # the paper's reduction term, -gamma/(m sigma^2) <g,y-hat> |v|^2.
    sigma = sigma2[picked].sqrt()
    a = sigma * (y_hat[picked] * v[picked]).sum(1) / m
    second = gamma[picked] * (g_dot_yhat[picked] * (3 * a.square() / sigma2[picked].square()
                                                    - lhs41[picked] / (m * sigma2[picked]))
                              - 2 * a * torch.tensor(grad_dot_v, dtype=torch.float64, device=ys.device) / sigma ** 3)
    rhs42_exact = torch.tensor(exact_quadratic, dtype=torch.float64, device=ys.device) + second
    out.update({"units42": chosen, "lhs42": torch.tensor(lhs42, dtype=torch.float64, device=ys.device),
                "hessian_term": hessian_term, "reduction42": reduction, "rhs42": hessian_term - reduction,
                "rhs42_exact": rhs42_exact})
    return {key: (value.cpu() if isinstance(value, torch.Tensor) else value) for key, value in out.items()}
