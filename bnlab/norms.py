"""Normalization layers of SPEC section 2: none, batch, noisy batch, and l1 / l2 / l-inf; and the registry
that declares each one once (`register_norm`, `NORMALIZATIONS`).

Every layer normalizes per unit: per feature for (N, C) inputs, per channel over the batch and
spatial dimensions for (N, C, H, W) inputs. Layers with statistics keep running estimates for
evaluation mode, updated with `momentum` as in torch.nn.BatchNorm.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bnlab.util.registry import lookup, register


@dataclass(frozen=True)
class Normalization:
    """Everything the suite knows of one normalization (`norm.kind`), declared once with `register_norm`.

    build(num_features, momentum=, eps=, center_before_norm=, noise=) returns the layer between a conv or
    linear layer and its nonlinearity; `noise` is a BatchNoise for it to apply to its output when the entry
    says it does (`applies_noise`), else None (make_norm then puts the noise after the layer).
    """

    name: str
    build: Callable[..., nn.Module]
    label: str                      # figure legends ("Standard + BatchNorm")
    color: str                      # a matplotlib colour
    linestyle: str = "-"
    noisy_label: str = ""           # the legend with noisy-BatchNorm noise on its output (norm.noise.enabled)
    noisy_color: str = "tab:gray"
    # Its form on S stacked runs' units ((S, width, N) inputs; parameters and statistics (S, width)), built as
    # build_stacked((S, width), momentum=, eps=, center_before_norm=); None: the DLN's seeds train one by one
    # (bnlab.models.dln_stack).
    build_stacked: Callable[..., nn.Module] | None = None
    # Whether `build` applies the noise it is given (norm.noise.enabled) itself; if not, make_norm adds the
    # noise after the layer.
    applies_noise: bool = False
    # The measured norm whose step time plans this one's runs (bnlab.launch.costs) until it is measured itself.
    cost_as: str = "batch"
    # Placed after the nonlinearity instead of before it (conv -> ReLU -> norm); only a model with
    # nonlinearities can place it (VGG; the DLN has none).
    after_activation: bool = False
    # Whether a learnable shift follows the conv/linear layer before its ReLU, so that VGG's `conv_bias: auto`
    # drops the layer's own bias (it would be redundant).
    shifts: bool = True
    # A reparametrization of the conv/linear layer before the slot, applied after its initialization:
    # WeightNorm (Salimans & Kingma 2016) writes each output unit's weight as g v / |v|.
    reparametrize: Callable[[nn.Module], nn.Module] | None = None
    # Whether it takes `norm.statistics=population` (its builders then get population=True): normalize with the
    # running (population) estimates in training too, Ghorbani et al. 2019's arm.
    population: bool = False


NORMALIZATIONS: dict[str, Normalization] = {}


def register_norm(norm: Normalization) -> Normalization:
    """Declare a normalization: `norm=NAME` (or `norm.kind=NAME`) then trains with it, every probe that
    applies measures it, and figures draw it in its style. The paper's claims keep their own sets."""
    return register(NORMALIZATIONS, norm, "normalization")


def normalization(kind: str) -> Normalization:
    return lookup(NORMALIZATIONS, kind, "norm.kind", "normalization")


def _unit_dims(x: torch.Tensor) -> list[int]:
    """Dimensions that form the 'batch' of one unit: batch and spatial dimensions."""
    return [0, *range(2, x.dim())]


def _per_unit(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-unit vector (C,) so it broadcasts against x (N, C, ...)."""
    return v.view(1, -1, *([1] * (x.dim() - 2)))


class BatchNoise(nn.Module):
    """The noise of "noisy" BatchNorm (Algorithm 1 of the paper's appendix).

    At every forward pass in training mode, for each unit j draw mu_j ~ U(-n_mu, n_mu) and
    sigma_j ~ U(1, n_sigma); then for each sample (and spatial position) draw
    m_ij ~ U(mu_j - r_mu, mu_j + r_mu) and s_ij ~ N(sigma_j, r_sigma) and return s * a + m.
    Draws come from torch's global generator, so probes can replay one draw by restoring its state.
    In evaluation mode the layer is the identity.
    """

    def __init__(self, n_mu: float = 0.5, n_sigma: float = 1.25, r_mu: float = 0.1, r_sigma: float = 0.1):
        super().__init__()
        self.n_mu, self.n_sigma, self.r_mu, self.r_sigma = n_mu, n_sigma, r_mu, r_sigma

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return a
        units = a.shape[1]
        mu = (torch.rand(units, device=a.device, dtype=a.dtype) * 2 - 1) * self.n_mu
        sigma = 1 + torch.rand(units, device=a.device, dtype=a.dtype) * (self.n_sigma - 1)
        # Drawn in logical order (not rand_like, which follows a's memory layout), so that a channels-last
        # input gets the same noise as a contiguous one; scaled in place (the same roundings as out of place).
        m = torch.rand(a.shape, device=a.device, dtype=a.dtype).mul_(2).sub_(1).mul_(self.r_mu).add_(_per_unit(mu, a))
        s = torch.randn(a.shape, device=a.device, dtype=a.dtype).mul_(self.r_sigma).add_(_per_unit(sigma, a))
        if not a.is_contiguous():
            # then copied into a's layout: a product of a channels-last and a contiguous tensor comes out
            # contiguous, and every layer after it would run in mixed layouts (a smoke VGG step 1.3-1.5x slower).
            m, s = torch.empty_like(a).copy_(m), torch.empty_like(a).copy_(s)
        return s * a + m

    def extra_repr(self) -> str:
        return f"n_mu={self.n_mu}, n_sigma={self.n_sigma}, r_mu={self.r_mu}, r_sigma={self.r_sigma}"


class _AffineNorm(nn.Module):
    """Shared parts: learnable per-unit scale and shift, running statistics, optional noise."""

    def __init__(self, num_features: int | tuple[int, ...], momentum: float, eps: float, noise: BatchNoise | None):
        """num_features: the number of units, or their shape (runs, width) in a stacked model."""
        super().__init__()
        self.num_features, self.momentum, self.eps = num_features, momentum, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.noise = noise

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.noise is None else self.noise(y)

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}"


class BatchNorm(_AffineNorm):
    """BatchNorm (Ioffe & Szegedy): (x - mean) / sqrt(var + eps) * weight + bias.

    Training mode uses the biased batch variance and updates the running mean and the unbiased running
    variance, exactly as torch.nn.BatchNorm1d/2d (and through the same fused kernel, which is much
    faster than composing the steps: the DLN is launch-bound).

    `population=True` (Ghorbani et al. 2019's arm, `norm.statistics=population`): training mode first updates
    the running estimates with the batch's mean and unbiased variance (momentum as above), then normalizes with
    the updated estimates, held constant (no gradient flows through them): the current batch weighs `momentum`
    in the statistics it is normalized with, the earlier batches the rest. `population_start` "prior" starts
    the estimates at 0 and 1 (torch's); "first_batch" sets them to the first training batch's statistics
    (docs/calibration.md). Evaluation mode is unchanged.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, noise: BatchNoise | None = None,
                 population: bool = False, population_start: str = "prior"):
        super().__init__(num_features, momentum, eps, noise)
        if population_start not in POPULATION_STARTS:
            raise ValueError(f"population_start must be one of {', '.join(POPULATION_STARTS)}, "
                             f"got {population_start!r}")
        self.population, self.population_start = population, population_start
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        if population and population_start == "first_batch":  # per unit, so that a stacked model splits it
            self.register_buffer("started", torch.zeros(num_features, dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(self._batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                             getattr(self, "started", None)))

    def _batch_norm(self, x, running_mean, running_var, weight, bias, started=None) -> torch.Tensor:
        if not (self.training and self.population):
            return F.batch_norm(x, running_mean, running_var, weight, bias, self.training, self.momentum, self.eps)
        with torch.no_grad():  # the estimates' update, as torch makes it (unbiased variance)
            var, mean = torch.var_mean(x.detach(), _unit_dims(x), correction=1)
            weight_of_batch = self.momentum if started is None else \
                torch.where(started, self.momentum, 1.0).to(mean.dtype)
            running_mean.lerp_(mean, weight_of_batch), running_var.lerp_(var, weight_of_batch)
            if started is not None:
                started.fill_(True)
        return F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", statistics=population ({self.population_start})" if self.population else "")


def lp_normalize(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, p: float, center: bool, eps: float,
                 dims: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """l_p normalization with batch statistics over `dims`, composed of differentiable torch operations:
    (output, batch mean, batch l_p norm), the statistics kept as reduced dimensions. N_p is the batch average
    (mean_i |b_i|^p)^(1/p), or max_i |b_i| for p = inf, of b = x - mean (center) or x. One norm call,
    (sum |b|^p)^(1/p) scaled by count^(-1/p), and the output as x scale + (bias - mean scale): each a single
    pass over the activations, which is what an l_p layer's time goes to."""
    mean = x.mean(dims, keepdim=True)
    base = x - mean if center else x
    if p == math.inf and not torch.is_grad_enabled():  # the largest |b| from the extremes, no |b| made
        norm = torch.maximum(_reduce(base, dims, torch.amax), -_reduce(base, dims, torch.amin))
    elif p == math.inf:  # differentiated: |b|'s maxima share the gradient, as _LpNormalize's backward
        norm = base.abs().amax(dims, keepdim=True)
    else:
        norm = torch.linalg.vector_norm(base, ord=p, dim=dims, keepdim=True)
        if p != math.inf:
            norm = norm * math.prod(x.shape[d] for d in dims) ** (-1 / p)
    scale = weight.view_as(mean) / (norm + eps)
    return torch.addcmul(bias.view_as(mean) - mean * scale, x, scale), mean, norm


class _LpNormalize(torch.autograd.Function):
    """lp_normalize with its backward pass written out, in as few passes over the activations as the norm
    allows (autograd's generic backward of the composition takes several more: a VGG step with l-inf
    normalization took 126 ms against 62 for BatchNorm, at width 1/8 on one CPU thread). Asked for second
    derivatives (a backward pass that builds a graph, as Hessian-vector products do), it differentiates
    lp_normalize with autograd instead, so every order stays exact (tests/test_norms.py checks both against
    autograd)."""

    @staticmethod
    def forward(ctx, x, weight, bias, p, center, eps, dims):
        y, mean, norm = lp_normalize(x, weight, bias, p, center, eps, dims)
        ctx.save_for_backward(x, weight, bias, mean, norm)
        ctx.options = p, center, eps, dims
        ctx.mark_non_differentiable(mean, norm)
        return y, mean, norm

    @staticmethod
    def backward(ctx, grad, _mean, _norm):
        x, weight, bias, mean, norm = ctx.saved_tensors
        p, center, eps, dims = ctx.options
        if torch.is_grad_enabled():  # create_graph: the exact, twice-differentiable path
            # (on the saved tensors themselves, so that the gradients stay functions of the inputs' graph)
            inputs = [t for t in (x, weight, bias) if t.requires_grad]
            y = lp_normalize(x, weight, bias, p, center, eps, dims)[0]
            found = iter(torch.autograd.grad(y, inputs, grad, create_graph=True))
            return (*(next(found) if t.requires_grad else None for t in (x, weight, bias)), None, None, None, None)
        n = math.prod(x.shape[d] for d in dims)
        denominator = norm + eps
        scale = weight.view_as(mean) / denominator
        grad_sum = grad.sum(dims, keepdim=True)
        grad_scale = (grad * x).sum(dims, keepdim=True) - mean * grad_sum  # dL/d scale = sum g (x - mean)
        grad_norm = -grad_scale * scale / denominator  # scale = weight / (norm + eps)
        # y = (x - mean) scale + bias: g scale, less its mean over the unit
        grad_x = torch.addcmul(-scale * grad_sum / n, grad, scale)
        # then through the norm: grad_norm x d norm / dx, where d norm / d base is, per element,
        # base / (n N) (p = 2); sign(base) / n (p = 1); sign(base) at the maxima, shared (p = inf; as amax);
        # sign(base) |base|^(p-1) / (n N^(p-1)) otherwise; less its mean over the unit when base = x - mean
        safe = torch.where(norm > 0, norm, 1)
        if p == 2:  # base / (n N) has mean 0 when centred: nothing to subtract
            factor = grad_norm / (n * safe)
            return grad_x.addcmul_(x - mean if center else x, factor), _per(grad_scale / denominator, weight), \
                _per(grad_sum, bias), None, None, None, None
        base = x - mean if center else x
        if p == math.inf:  # sign(b) at the maxima of |b|, ties sharing the gradient as torch's amax does
            top, bottom = base == norm, base == -norm
            tops, bottoms = (_reduce(t.view(torch.uint8), dims, torch.sum, dtype=torch.int32) for t in (top, bottom))
            share = grad_norm / (tops + bottoms)
            if center:  # less the mean of d norm / d base over the unit
                grad_x = grad_x.sub_(share * (tops - bottoms) / n)
            return grad_x.add_(torch.where(top, share, torch.where(bottom, -share, 0))), \
                _per(grad_scale / denominator, weight), _per(grad_sum, bias), None, None, None, None
        if p == 1:
            d_norm = base.sign().div_(n)
        else:
            d_norm = base.abs().pow_(p - 1).mul_(base.sign()).div_(n * safe.pow(p - 1))
        if center:
            d_norm = d_norm - d_norm.mean(dims, keepdim=True)
        return grad_x.addcmul_(d_norm, grad_norm), _per(grad_scale / denominator, weight), _per(grad_sum, bias), \
            None, None, None, None


FOLD = 64  # rows folded into one by _reduce


def _reduce(t: torch.Tensor, dims: list[int], op, **kwargs) -> torch.Tensor:
    """op (torch.amax, torch.amin, torch.sum) over `dims`, kept. A column reduction of a tall, narrow matrix
    (positions x a few channels: a channels-last activation) is slow on a CPU for all but a float sum (an amax
    over 131,072 x 8: 2.4 ms); folded to 1/FOLD of the rows and FOLD times the columns it is fast (0.2 ms),
    then the FOLD partial results per unit are reduced."""
    if t.dim() == 2 and list(dims) == [0] and t.is_contiguous() and t.shape[0] % FOLD == 0 and t.shape[1] < FOLD:
        partial = op(t.view(-1, FOLD * t.shape[1]), 0, **kwargs)
        return op(partial.view(FOLD, t.shape[1]), 0, keepdim=True, **kwargs)
    return op(t, dims, keepdim=True, **kwargs)


def _per(statistic: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
    """A per-unit statistic (kept as reduced dimensions) in its parameter's shape."""
    return statistic.reshape(parameter.shape)


class LpNorm(_AffineNorm):
    """l_p normalization (paper section 3.3): subtract the batch mean, divide by the batch l_p norm.

    N_p = (mean_i |x_i|^p)^(1/p) for p = 1, 2 and N_inf = max_i |x_i|, taken over the batch (and spatial
    positions) per unit. By default the norm is taken on the uncentered activations, as the paper says
    ("before shifting the mean"); `center_before_norm=True` takes it on x - mean instead.
    """

    def __init__(self, num_features: int, p: float, center_before_norm: bool = False, momentum: float = 0.1,
                 eps: float = 1e-5, noise: BatchNoise | None = None):
        super().__init__(num_features, momentum, eps, noise)
        if not (p == math.inf or p >= 1):
            raise ValueError(f"LpNorm: p must be >= 1 or inf, got {p}")
        self.p, self.center_before_norm = p, center_before_norm
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_norm", torch.ones(num_features))

    def _statistics_dims(self, x: torch.Tensor) -> list[int]:
        """The dimensions a unit's batch statistics run over (a stacked subclass has its own layout)."""
        return _unit_dims(x)

    def _expand(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A per-unit tensor shaped to broadcast against x."""
        return _per_unit(v, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(self._normalize(x))  # the noise, if any, on the output in x's own shape and layout

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
                and not x.is_contiguous():
            # channels-last: the same values seen as (positions, channels), each unit a contiguous column, where
            # per-unit broadcasts are fast (as (N, C, H, W) with (1, C, 1, 1) operands, 2-3x slower on a CPU)
            n, c, h, w = x.shape
            return self._normalize(x.permute(0, 2, 3, 1).reshape(-1, c)).view(n, h, w, c).permute(0, 3, 1, 2)
        dims = self._statistics_dims(x)
        if self.training:
            y, mean, norm = _LpNormalize.apply(x, self.weight, self.bias, self.p, self.center_before_norm,
                                               self.eps, dims)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().view_as(self.running_mean), self.momentum)
                self.running_norm.lerp_(norm.detach().view_as(self.running_norm), self.momentum)
            return y
        scale = self.weight / (self.running_norm + self.eps)
        return torch.addcmul(self._expand(self.bias, x), x - self._expand(self.running_mean, x),
                             self._expand(scale, x))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}, center_before_norm={self.center_before_norm}"


class StackedBatchNorm(BatchNorm):
    """bnlab's BatchNorm on each of S runs' units (parameters and statistics (S, width)), through torch's
    fused kernel on all S * width units at once."""

    def forward(self, h):
        runs, width, n = h.shape
        units = runs * width
        started = getattr(self, "started", None)
        return self._batch_norm(h.view(1, units, n), self.running_mean.view(units), self.running_var.view(units),
                                self.weight.view(units), self.bias.view(units),
                                None if started is None else started.view(units)).view(runs, width, n)


class StackedLpNorm(LpNorm):
    """bnlab's l_p normalization on each of S runs' units (parameters and statistics (S, width)): the same
    forward, with a unit's statistics over the last (sample) dimension."""

    def _statistics_dims(self, x):
        return [-1]

    def _expand(self, v, x):
        return v[..., None]


class GroupNorm(_AffineNorm):
    """Group normalization (Wu & He 2018): per sample, the units split into `groups` groups of consecutive
    units, each group standardized over its units (and their positions) with its own mean and biased variance,
    then a per-unit scale and shift. One group is layer normalization (Ba et al. 2016): for (N, C) inputs
    exactly torch.nn.LayerNorm(C); for (N, C, H, W) the normalization over (C, H, W) with per-channel scale and
    shift, torch.nn.GroupNorm(1, C). Per sample: no batch statistics, so training and evaluation mode compute
    the same function (`momentum` is unused). Through torch's own kernel."""

    def __init__(self, num_features: int, groups: int, eps: float = 1e-5, noise: BatchNoise | None = None):
        if num_features % groups:
            raise ValueError(f"GroupNorm: {num_features} units do not split into {groups} groups")
        super().__init__(num_features, 0.0, eps, noise)
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(F.group_norm(x, self.groups, self.weight, self.bias, self.eps))

    def extra_repr(self) -> str:
        return f"{self.num_features}, groups={self.groups}, eps={self.eps}"


# Wu & He's default of 32 groups (norm.groups), or as many as divide the layer's units: the DLN's 10 units are 2
# groups of 5. VGG16 at width 1/8 has 8-64 channels, where 32 groups are groups of 1-2 channels and the network
# does not train: the smoke scale sets its own (scale.vgg.norm_groups, docs/calibration.md).
GROUPS = 32


# norm.* keys added after runs were stored, with the value those runs had (and every reader's default): a config
# from before them reads these, and bnlab.config leaves them out of a run's identity at these values.
ADDED_NORM_KEYS = {"statistics": "batch", "population_start": "prior", "groups": GROUPS}


def norm_setting(norm_cfg, key: str):
    """norm.<key> of a config, or its ADDED_NORM_KEYS default for a config stored before the key existed."""
    return norm_cfg.get(key, ADDED_NORM_KEYS[key])


def groups_for(num_features: int, groups: int = GROUPS) -> int:
    return math.gcd(num_features, groups)


STATISTICS = ("batch", "population")  # norm.statistics
POPULATION_STARTS = ("prior", "first_batch")  # norm.population_start


def statistics_kwargs(kind: str, statistics: str, population_start: str = "prior") -> dict:
    """What a normalization's builders get for `norm.statistics`: population=True (and where its estimates start)
    where it takes population statistics, nothing for the default (batch); a ValueError for a normalization that
    cannot take them."""
    if statistics not in STATISTICS:
        raise ValueError(f"norm.statistics must be one of {', '.join(STATISTICS)}, got {statistics!r}")
    if statistics == "batch":
        return {}
    if not normalization(kind).population:
        takers = ", ".join(n for n, e in NORMALIZATIONS.items() if e.population)
        raise ValueError(f"norm.statistics={statistics}: normalization {kind!r} keeps no running statistics to "
                         f"normalize with (it takes: {takers})")
    return {"population": True, "population_start": population_start}


def make_norm(kind: str, num_features: int, *, momentum: float = 0.1, eps: float = 1e-5,
              center_before_norm: bool = False, noise: dict | None = None, statistics: str = "batch",
              population_start: str = "prior", groups: int = 32) -> nn.Module:
    """Build the layer that sits between a conv/linear layer and its nonlinearity.

    `noise` (the constants n_mu, n_sigma, r_mu, r_sigma) adds the noisy-BatchNorm noise to the layer's
    output; with kind "none" that is noise on the raw pre-activations (paper, section 2.1). `statistics`:
    "population" normalizes with the running estimates in training too (statistics_kwargs); `groups` is
    GroupNorm's most groups (groups_for).
    """
    entry = normalization(kind)
    noise_layer = BatchNoise(**noise) if noise else None
    layer = entry.build(num_features, momentum=momentum, eps=eps, center_before_norm=center_before_norm,
                        noise=noise_layer if entry.applies_noise else None, groups=groups,
                        **statistics_kwargs(kind, statistics, population_start))
    if noise_layer is not None and not entry.applies_noise:
        layer = nn.Sequential(layer, noise_layer)
    return layer


def _no_norm(num_features, *, noise, **_):
    return noise if noise is not None else nn.Identity()


def _batch_norm(num_features, *, momentum, eps, noise, population=False, population_start="prior", **_):
    return BatchNorm(num_features, momentum, eps, noise, population, population_start)


def _lp_norm(p: float):
    def build(num_features, *, momentum, eps, center_before_norm, noise, **_):
        return LpNorm(num_features, p, center_before_norm, momentum, eps, noise)
    return build


def _stacked_none(shape, **_):
    return nn.Identity()


def _stacked_batch_norm(shape, *, momentum, eps, population=False, population_start="prior", **_):
    return StackedBatchNorm(shape, momentum, eps, population=population, population_start=population_start)


def _stacked_lp_norm(p: float):
    def build(shape, *, momentum, eps, center_before_norm):
        return StackedLpNorm(shape, p, center_before_norm, momentum, eps)
    return build


# The paper's normalizations, in its colours where it has them; l_p dashed, as in its figures 11-13.
register_norm(Normalization("none", _no_norm, "Standard", "tab:red", noisy_label="Standard + noise (no BN)",
                            noisy_color="tab:gray", build_stacked=_stacked_none, applies_noise=True, cost_as="none",
                            shifts=False))
register_norm(Normalization("batch", _batch_norm, "Standard + BatchNorm", "tab:blue",
                            noisy_label='Standard + "Noisy" BatchNorm', noisy_color="tab:orange",
                            build_stacked=_stacked_batch_norm, applies_noise=True, population=True))
for _name, _p, _label, _color in (("l1", 1.0, "L1", "tab:green"), ("l2", 2.0, "L2", "tab:purple"),
                                  ("linf", math.inf, "L∞", "tab:pink")):
    register_norm(Normalization(_name, _lp_norm(_p), f"Standard + {_label}", _color, "--",
                                build_stacked=_stacked_lp_norm(_p), applies_noise=True, cost_as=_name))
# Beyond the paper (Lubana et al. 2021): normalizers that use no batch statistics.
register_norm(Normalization("layer", lambda n, *, eps, noise, **_: GroupNorm(n, 1, eps, noise),
                            "Standard + LayerNorm", "tab:brown", "-.", applies_noise=True))
register_norm(Normalization("group", lambda n, *, eps, noise, groups=GROUPS, **_:
                            GroupNorm(n, groups_for(n, groups), eps, noise),
                            "Standard + GroupNorm", "tab:cyan", "-.", applies_noise=True))
# BatchNorm after the ReLU (a common practice the paper does not test): the same layer, placed after it.
register_norm(Normalization("batch_after_relu", _batch_norm, "Standard + BatchNorm after ReLU", "tab:olive", "-.",
                            applies_noise=True, after_activation=True, shifts=False))


class WeightNormParametrization(nn.Module):
    """Each output unit's weight as g v / |v| (Salimans & Kingma 2016), as torch.nn.utils.parametrizations.
    weight_norm(dim=0) writes it, in plain differentiable operations: torch's fused torch._weight_norm gives
    wrong second derivatives (a 4-6-3 network's top Hessian eigenvalue 0.768 against 0.769 by hand and by finite
    differences, its third 0.583 against 0.620; tests/test_curvature.py), which the curvature probes take."""

    def forward(self, g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return g * v / v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return weight.flatten(1).norm(dim=1).view(-1, *([1] * (weight.dim() - 1))), weight


def weight_normalized(layer: nn.Module) -> nn.Module:
    """`layer` with its weight parametrized as g v / |v| per output unit, g starting at |v| (the function
    unchanged): parameters parametrizations.weight.original0 (g) and original1 (v), as torch's weight_norm."""
    nn.utils.parametrize.register_parametrization(layer, "weight", WeightNormParametrization(), unsafe=True)
    return layer


# WeightNorm: no layer in the slot; the layer before it reparametrized (weight_normalized).
register_norm(Normalization("weight", _no_norm, "Standard + WeightNorm", "tab:gray", ":", applies_noise=True,
                            cost_as="none", shifts=False, reparametrize=weight_normalized))
