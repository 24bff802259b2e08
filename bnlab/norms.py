"""Normalization layers of SPEC section 2: none, batch, noisy batch, and l1 / l2 / l-inf.

Every layer normalizes per unit: per feature for (N, C) inputs, per channel over the batch and
spatial dimensions for (N, C, H, W) inputs. Layers with statistics keep running estimates for
evaluation mode, updated with `momentum` as in torch.nn.BatchNorm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NORM_KINDS = ("none", "batch", "l1", "l2", "linf")


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
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, noise: BatchNoise | None = None):
        super().__init__(num_features, momentum, eps, noise)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         self.training, self.momentum, self.eps)
        return self._finish(y)


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

    def batch_norm_value(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """N_p per unit. One vector_norm call, (sum |x|^p)^(1/p), scaled by count^(-1/p) to the batch
        average: the DLN is launch-bound, so fewer, fused ops matter more than anything else here."""
        dims = self._statistics_dims(x)
        base = (x - self._expand(mean, x)) if self.center_before_norm else x
        norm = torch.linalg.vector_norm(base, ord=self.p, dim=dims)
        if self.p == math.inf:
            return norm
        return norm * math.prod(x.shape[d] for d in dims) ** (-1 / self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean = x.mean(self._statistics_dims(x))
            norm = self.batch_norm_value(x, mean)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_norm.lerp_(norm.detach(), self.momentum)
        else:
            mean, norm = self.running_mean, self.running_norm
        scale = self.weight / (norm + self.eps)
        return self._finish(torch.addcmul(self._expand(self.bias, x), x - self._expand(mean, x),
                                          self._expand(scale, x)))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}, center_before_norm={self.center_before_norm}"


def make_norm(kind: str, num_features: int, *, momentum: float = 0.1, eps: float = 1e-5,
              center_before_norm: bool = False, noise: dict | None = None) -> nn.Module:
    """Build the layer that sits between a conv/linear layer and its nonlinearity.

    `noise` (the constants n_mu, n_sigma, r_mu, r_sigma) adds the noisy-BatchNorm noise to the layer's
    output; with kind "none" that is noise on the raw pre-activations (paper, section 2.1).
    """
    noise_layer = BatchNoise(**noise) if noise else None
    if kind == "none":
        return noise_layer if noise_layer is not None else nn.Identity()
    if kind == "batch":
        return BatchNorm(num_features, momentum, eps, noise_layer)
    p = {"l1": 1.0, "l2": 2.0, "linf": math.inf}.get(kind)
    if p is None:
        raise ValueError(f"unknown normalization kind {kind!r}; allowed: {', '.join(NORM_KINDS)}")
    return LpNorm(num_features, p, center_before_norm, momentum, eps, noise_layer)
