"""The curvature of the loss itself: the Hessian's top eigenvalues (Lanczos), its trace (Hutchinson) and the
share of the gradient that lies in its top eigenspace, from Hessian-vector products (double backward).

The paper's "effective" beta-smoothness (bnlab.probes.landscape) is a proxy for curvature along one
direction; these measure the Hessian with respect to every parameter. `mode` chooses the function:
- "train": batch statistics, the loss SGD actually optimizes (the default, as for every probe);
- "eval": running statistics, what PyHessian and tomgoldstein/loss-landscape measure (they call
  model.eval()). For a network with BatchNorm the two are different functions with different Hessians.

One measurement is one forward pass: its graph is kept and every Hessian-vector product differentiates the
same gradient again, so a stochastic layer's draw is the same for every product, and running statistics
are restored afterwards, as for every probe.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bnlab.probes.measurement import LossFn, _device_of, _loss, _Measurement, _runs


class _Hessian:
    """The Hessian of the loss on one batch, as an operator on flat vectors (one entry per parameter)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, inputs, targets, m: _Measurement):
        if _runs(model):
            raise ValueError("curvature probes measure one run; a stacked model's Hessian is block-diagonal over "
                             "its runs: measure each run as its own model")
        self.params = [p for p in model.parameters() if p.requires_grad]
        loss = _loss(model, loss_fn, inputs, targets, m).sum()
        self.grads = torch.autograd.grad(loss, self.params, create_graph=True)
        self.gradient = torch.cat([g.detach().reshape(-1) for g in self.grads])
        self.size, self.products = self.gradient.numel(), 0

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        pieces, offset = [], 0
        for p in self.params:
            pieces.append(v[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        hv = torch.autograd.grad(self.grads, self.params, grad_outputs=pieces, retain_graph=True)
        self.products += 1
        return torch.cat([h.reshape(-1) for h in hv])

    def random(self, generator: torch.Generator, rademacher: bool = False) -> torch.Tensor:
        """A random vector drawn from `generator` on the CPU (torch's own generators stay untouched)."""
        g = self.gradient
        if rademacher:
            v = torch.randint(0, 2, (self.size,), generator=generator, dtype=torch.int64).to(g.dtype) * 2 - 1
        else:
            v = torch.randn(self.size, generator=generator, dtype=g.dtype)
        return v.to(g.device)


def _lanczos(hessian: _Hessian, k: int, iterations: int, tolerance: float, generator: torch.Generator):
    """The k largest eigenvalues (descending) of the Hessian and their unit eigenvectors (rows), by Lanczos
    with full reorthogonalization; stops when each of the k Ritz values' residual is below `tolerance`
    times its size, or after `iterations` products. Returns (values, vectors, converged).

    As any single-vector Lanczos, it finds each distinct eigenvalue once: a top eigenvalue of multiplicity
    two shows once among the k, unless the Krylov space runs out first (then it restarts orthogonally)."""
    if hessian.size < k:
        raise ValueError(f"k={k} eigenvalues asked of a model with {hessian.size} parameters")
    iterations = min(iterations, hessian.size)
    q = hessian.random(generator)
    basis = [q / torch.linalg.vector_norm(q)]
    alphas: list[float] = []
    betas: list[float] = []
    converged = False
    for j in range(iterations):
        w = hessian @ basis[j]
        alphas.append(float(w @ basis[j]))
        w = w - alphas[-1] * basis[j] - (betas[-1] * basis[j - 1] if j else 0)
        stacked = torch.stack(basis)
        for _ in range(2):  # twice is enough (Kahan): the basis stays orthogonal to rounding
            w = w - stacked.T @ (stacked @ w)
        beta = float(torch.linalg.vector_norm(w))
        tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
        ritz, vectors = torch.linalg.eigh(tridiagonal)
        top = range(len(alphas) - 1, max(len(alphas) - k, 0) - 1, -1)
        residuals = [beta * abs(float(vectors[-1, i])) for i in top]
        scale = max(abs(float(ritz[-1])), abs(float(ritz[0])), 1e-30)
        exhausted = beta <= 1e-10 * scale  # the Krylov space is invariant: its Ritz values are exact
        if len(alphas) >= k and (exhausted or all(r <= tolerance * max(abs(float(ritz[i])), 1e-30)
                                                  for r, i in zip(residuals, top, strict=True))):
            converged = True
            break
        if j + 1 < iterations:
            if exhausted:  # fewer than k Ritz values so far: go on from a new vector orthogonal to them all
                w = hessian.random(generator)
                stacked = torch.stack(basis)
                for _ in range(2):
                    w = w - stacked.T @ (stacked @ w)
                beta, w = 0.0, w / torch.linalg.vector_norm(w)  # the tridiagonal matrix splits into blocks
            else:
                w = w / beta
            betas.append(beta)
            basis.append(w)
    chosen = list(top)
    values = [float(ritz[i]) for i in chosen]
    coefficients = vectors[:, chosen].to(basis[0].dtype).to(basis[0].device)
    eigenvectors = (torch.stack(basis).T @ coefficients).T
    eigenvectors = eigenvectors / torch.linalg.vector_norm(eigenvectors, dim=1, keepdim=True)
    return values, eigenvectors, converged


def hessian_eigenvalues(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor, k: int = 1,
                        mode: str = "train", iterations: int = 100, tolerance: float = 1e-3, seed: int = 0) -> dict:
    """The k largest eigenvalues of the Hessian of the loss on this batch with respect to every parameter.

    Lanczos on Hessian-vector products, started from a Gaussian vector drawn with `seed`, stopped when each
    of the k Ritz values has a residual below `tolerance` times its size, or after `iterations` products.
    Returns {"eigenvalues": [k floats, descending], "hvps": products used, "converged": bool}.
    """
    _check_k(k, iterations)
    with _Measurement(model, _device_of(model, inputs), mode) as m:
        hessian = _Hessian(model, loss_fn, inputs, targets, m)
        values, _, converged = _lanczos(hessian, k, iterations, tolerance, torch.Generator().manual_seed(seed))
    return {"eigenvalues": values, "hvps": hessian.products, "converged": converged}


def gradient_in_top_eigenspace(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor,
                               k: int = 1, mode: str = "train", iterations: int = 100, tolerance: float = 1e-3,
                               seed: int = 0) -> dict:
    """The fraction of the gradient's squared norm that lies in the span of the Hessian's top-k eigenvectors
    (Gur-Ari et al. 2018; Ghorbani et al. 2019): sum_i (g . u_i)^2 / |g|^2, with the u_i from Lanczos as in
    hessian_eigenvalues. Returns {"fraction", "eigenvalues", "hvps", "converged"}."""
    _check_k(k, iterations)
    with _Measurement(model, _device_of(model, inputs), mode) as m:
        hessian = _Hessian(model, loss_fn, inputs, targets, m)
        values, vectors, converged = _lanczos(hessian, k, iterations, tolerance, torch.Generator().manual_seed(seed))
        g = hessian.gradient
        fraction = float((vectors @ g).square().sum() / g.square().sum())
    return {"fraction": fraction, "eigenvalues": values, "hvps": hessian.products, "converged": converged}


def hessian_trace(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor, samples: int = 20,
                  mode: str = "train", seed: int = 0) -> dict:
    """Hutchinson's estimate of the Hessian's trace: the mean of v^T H v over `samples` Rademacher vectors v
    drawn with `seed`, with its standard error (the samples' standard deviation / sqrt(samples); nan for one
    sample). Returns {"trace", "stderr", "samples": [v^T H v], "hvps"}."""
    if not (isinstance(samples, int) and samples >= 1):
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    generator = torch.Generator().manual_seed(seed)
    with _Measurement(model, _device_of(model, inputs), mode) as m:
        hessian = _Hessian(model, loss_fn, inputs, targets, m)
        quadratic = []
        for _ in range(samples):
            v = hessian.random(generator, rademacher=True)
            quadratic.append(float(v @ (hessian @ v)))
    mean = sum(quadratic) / samples
    spread = math.sqrt(sum((q - mean) ** 2 for q in quadratic) / (samples - 1)) if samples > 1 else math.nan
    return {"trace": mean, "stderr": spread / math.sqrt(samples), "samples": quadratic, "hvps": hessian.products}


def _tridiagonal(hessian: _Hessian, start: torch.Tensor, iterations: int) -> tuple[list[float], list[float]]:
    """Lanczos from `start` with full reorthogonalization: the diagonal and off-diagonal of the tridiagonal
    matrix T of the Krylov space, after `iterations` products or when the space is invariant (then T's
    eigenvalues are exact eigenvalues of the Hessian, and its quadrature exact for this start)."""
    basis = [start / torch.linalg.vector_norm(start)]
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(iterations):
        w = hessian @ basis[j]
        alphas.append(float(w @ basis[j]))
        stacked = torch.stack(basis)
        for _ in range(2):  # twice is enough (Kahan): the basis stays orthogonal to rounding
            w = w - stacked.T @ (stacked @ w)
        beta = float(torch.linalg.vector_norm(w))
        scale = max(abs(a) for a in alphas) + (max(betas) if betas else 0.0)
        if j + 1 == iterations or beta <= 1e-10 * max(scale, 1e-30):
            break
        betas.append(beta)
        basis.append(w / beta)
    return alphas, betas


def hessian_spectrum(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor,
                     mode: str = "train", iterations: int = 100, runs: int = 1, grid_points: int = 1000,
                     sigma: float | None = None, seed: int = 0) -> dict:
    """The eigenvalue density of the Hessian of the loss on this batch, by stochastic Lanczos quadrature (SLQ;
    Lin, Saad and Yang 2016; Ghorbani, Krishnan and Xiao 2019), with batch statistics (`mode="train"`, the
    function SGD optimizes) or running statistics (`"eval"`, what PyHessian's density() measures).

    Each of `runs` Lanczos runs starts from a Rademacher vector v (drawn with `seed`, normalized) and takes
    `iterations` Hessian-vector products; the eigen-decomposition of its tridiagonal matrix gives Ritz values
    theta_i and weights w_i (the squared first components of its eigenvectors, summing to 1), a quadrature
    with v^T f(H) v = sum_i w_i f(theta_i), exact for polynomials f of degree below 2 x iterations. So
    n sum_i w_i theta_i^k, averaged over runs, is Hutchinson's estimate of tr(H^k) (n parameters) for
    k < 2 x iterations, with the standard error of that average over runs.

    The density is the runs' mean of sum_i w_i N(t; theta_i, sigma^2) on `grid_points` points spanning the
    Ritz values (a margin of 5 sigma either side), normalized to integrate to 1; `sigma` defaults to 1% of
    the Ritz values' range (PyHessian's `density_generate` uses a Gaussian of variance 1e-5 times the range).

    Returns {"grid", "density" (float64 CPU tensors), "ritz_values", "weights" (one list per run, as
    PyHessian's density() returns eigen_list_full and weight_list_full), "trace" and "trace_stderr",
    "square_sum" and "square_sum_stderr" (estimates of tr(H) and tr(H^2) = sum lambda^2; stderr nan for one
    run), "sigma", "hvps"}. The model is left exactly as it was found (bnlab.probes).
    """
    for name, value, least in (("iterations", iterations, 1), ("runs", runs, 1), ("grid_points", grid_points, 2)):
        if not (isinstance(value, int) and value >= least):
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be positive (or None: 1% of the spectrum's range), got {sigma!r}")
    generator = torch.Generator().manual_seed(seed)
    ritz_values, weights = [], []
    with _Measurement(model, _device_of(model, inputs), mode) as m:
        hessian = _Hessian(model, loss_fn, inputs, targets, m)
        for _ in range(runs):
            alphas, betas = _tridiagonal(hessian, hessian.random(generator, rademacher=True),
                                         min(iterations, hessian.size))
            tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
            if betas:
                off = torch.tensor(betas, dtype=torch.float64)
                tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
            theta, vectors = torch.linalg.eigh(tridiagonal)
            ritz_values.append(theta.tolist())
            weights.append(vectors[0].square().tolist())
    n = hessian.size
    moments = {}
    for name, power in (("trace", 1), ("square_sum", 2)):
        per_run = [n * sum(w * t ** power for w, t in zip(ws, ts, strict=True))
                   for ws, ts in zip(weights, ritz_values, strict=True)]
        mean = sum(per_run) / runs
        spread = math.sqrt(sum((v - mean) ** 2 for v in per_run) / (runs - 1)) if runs > 1 else math.nan
        moments[name], moments[f"{name}_stderr"] = mean, spread / math.sqrt(runs)
    grid, density, sigma = spectral_density(ritz_values, weights, grid_points, sigma)
    return {"grid": grid, "density": density, "ritz_values": ritz_values, "weights": weights, **moments,
            "sigma": sigma, "hvps": hessian.products}


def spectral_density(ritz_values: list[list[float]], weights: list[list[float]], grid_points: int = 1000,
                     sigma: float | None = None, grid: torch.Tensor | None = None) -> tuple:
    """The density of an SLQ quadrature (hessian_spectrum's Ritz values and weights, one list per Lanczos run):
    the runs' mean of sum_i w_i N(t; theta_i, sigma^2), normalized to integrate to 1 over the grid. The grid
    spans the Ritz values with a margin of 5 sigma either side (`grid_points` points) unless given; `sigma`
    defaults to 1% of the Ritz values' range. Returns (grid, density, sigma), float64 CPU tensors and a float."""
    every = torch.tensor([t for ts in ritz_values for t in ts], dtype=torch.float64)
    low, high = float(every.min()), float(every.max())
    if sigma is None:
        sigma = 0.01 * (high - low) if high > low else max(abs(high), 1.0) * 1e-3
    if grid is None:
        grid = torch.linspace(low - 5 * sigma, high + 5 * sigma, grid_points, dtype=torch.float64)
    density = torch.zeros(len(grid), dtype=torch.float64)
    for ts, ws in zip(ritz_values, weights, strict=True):
        t, w = torch.tensor(ts, dtype=torch.float64), torch.tensor(ws, dtype=torch.float64)
        density += (w * torch.exp(-0.5 * ((grid[:, None] - t) / sigma) ** 2)).sum(1) / (sigma * math.sqrt(2 * math.pi))
    density /= len(ritz_values)
    return grid, density / torch.trapezoid(density, grid), sigma


def legacy_eig(matrix: torch.Tensor, eigenvectors: bool = False):
    """torch.eig as torch < 1.9 had it, for a symmetric matrix: eigenvalues as (n, 2) real and imaginary parts,
    and eigenvectors as columns. PyHessian 0.1's density() calls torch.eig, which newer torch removed; the
    tests and `make bench` lend it this one to compare against it (its tridiagonal matrices are symmetric)."""
    values, vectors = torch.linalg.eigh(matrix)
    pairs = torch.stack([values, torch.zeros_like(values)], 1)
    return (pairs, vectors) if eigenvectors else (pairs, torch.empty(0))


def _check_k(k, iterations) -> None:
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not (isinstance(iterations, int) and iterations >= k):
        raise ValueError(f"iterations must be an integer >= k ({k}), got {iterations!r}")
