"""Runs the probes inside the training loop, at `probes.every` steps (the landscape also at its denser interval
early in the run), and turns results into metric rows.

The landscape and activation probes look at theta_t before the optimizer step; internal covariate shift
needs theta_{t+1} too, so it runs after the step with theta_t swapped back in for the measurement. All
of them replay the random draw the training step itself used, so a noisy layer shows the probes the
same noise the step saw, and none of them changes the run's random stream or its trajectory.

A stacked model (bnlab.models.dln_stack, bnlab.training.stacking) gets one schedule for all its runs:
each run keeps its own generators (seeded from its seed, as when it trains alone) and its own metric rows.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

from bnlab import probes
from bnlab.config import scheduled_probes_enabled
from bnlab.training.rows import MetricRows
from bnlab.util.rng import rng_state, set_rng_state


class ProbeSchedule:
    def __init__(self, cfg, model: nn.Module, loss_fn, lr: float, seeds: list[int] | None = None):
        """`seeds`: those of a stacked model's runs, in order (default: the run's own, cfg.seed)."""
        p = cfg.probes
        self.cfg, self.model, self.loss_fn, self.lr, self.steps = p, model, loss_fn, lr, cfg.train.steps
        self.stacked = getattr(model, "runs", None) is not None
        seeds = [cfg.seed] if seeds is None else seeds
        layers = probes.numbered_layers(model)
        self.number = {name: i + 1 for i, (name, _) in enumerate(layers)}
        self.ics_layers = None if p.ics.layers == "all" or not p.ics.enabled else \
            [layers[n - 1][0] for n in p.ics.layers]
        m = p.landscape.multipliers
        self.multipliers = probes.landscape_multipliers(m.start, m.stop, m.num, m.spacing)
        self.direction_rngs = [torch.Generator().manual_seed(seed + 1) for seed in seeds]
        all_numbers = list(range(1, len(layers) + 1))
        act_layers = all_numbers if p.activations.layers == "all" else list(p.activations.layers)
        self.act_modules = {n: model.activation_modules()[n] for n in act_layers}
        units_rngs = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.units = probes.sample_units(model, self.act_modules, p.activations.units,
                                         units_rngs if self.stacked else units_rngs[0])
        # Made once, not at every probe step, where each would make the host wait for a GPU: their copies
        # on the model's device, and as Python lists for the metric rows' labels.
        device = next(model.parameters()).device
        self.units_on_device = {k: u.to(device) for k, u in self.units.items()}
        self.unit_labels = {k: u.tolist() for k, u in self.units.items()}
        self.bn_numbers = self._batchnorm_layer_numbers()
        self.any_enabled = scheduled_probes_enabled(cfg)
        self.hessian = p.hessian if p.hessian.enabled else None
        self.modes_differ = probes.modes_differ(model)
        self.hessian_seed = 1_000_003 * seeds[0]  # Lanczos start vectors: one stream per run, never torch's
        theorems = p.get("theorems")
        self.theorems = theorems if theorems is not None and theorems.enabled else None
        spectrum = p.get("spectrum")
        self.spectrum = spectrum if spectrum is not None and spectrum.enabled else None
        self.spectrum_steps = spectrum_steps(spectrum, self.steps) if self.spectrum is not None else set()
        self.not_applicable = self._not_applicable()

    def _not_applicable(self) -> dict[str, str]:
        """Enabled probes that measure nothing on this model, each with why: the run says so once (its log
        and summary.json) rather than leaving their metrics silently absent."""
        out = {}
        if self.cfg.bn_sigma.enabled and not self.bn_numbers:
            out["bn_sigma"] = "the model has no BatchNorm layer (bnlab.probes.batchnorm_layers)"
        if self.theorems is not None and not probes.theorem_layers(self.model):
            out["theorems"] = ("the model has no plain BatchNorm layer (noisy BatchNorm's output is not gamma "
                               "y-hat + beta; bnlab.probes.theorem_layers)")
        return out

    def _batchnorm_layer_numbers(self) -> dict[str, int]:
        """A BatchNorm layer carries the number of the conv/linear layer it follows."""
        numbers, current = {}, 0
        bn_names = {name for name, _ in probes.batchnorm_layers(self.model)}
        for name, _ in self.model.named_modules():
            current = self.number.get(name, current)
            if name in bn_names:
                numbers[name] = current
        return numbers

    def due(self, step: int) -> bool:
        return step_kind(self.cfg, self.any_enabled, step, self.steps) != "plain" or self._hessian_due(step) or \
            self._theorems_due(step) or step in self.spectrum_steps

    def _landscape_due(self, step: int) -> bool:
        """At every probe step, and in the early window at its denser interval."""
        return self.cfg.landscape.enabled and (step % self.cfg.every == 0 or in_early_grid(self.cfg, step, self.steps))

    def _hessian_due(self, step: int) -> bool:
        return self.hessian is not None and step % self.hessian.every == 0

    def _theorems_due(self, step: int) -> bool:
        return self.theorems is not None and step % self.theorems.every == 0

    def _activations_due(self, step: int) -> bool:
        """At every probe step, and the step after it when `consecutive` is set (step_kind "after"), for the
        moment changes between successive steps (figure 8)."""
        a, every = self.cfg.activations, self.cfg.every
        return a.enabled and (step % every == 0 or (a.consecutive and step % every == 1))

    def _direction_generator(self):
        return self.direction_rngs if self.stacked else self.direction_rngs[0]

    def before_step(self, step: int, x, y, rows: list[MetricRows]) -> None:
        """`rows`: the metric rows of each run (one list entry for an ordinary model)."""
        p = self.cfg
        self.rng_before = rng_state(x.device)
        if self._hessian_due(step) or self._theorems_due(step) or step in self.spectrum_steps:
            with second_order_layout(self.model, x) as x_second:
                if self._hessian_due(step):
                    self._record_hessian(step, x_second, y, rows)
                if self._theorems_due(step):
                    self._record_theorems(step, x_second, y, rows)
                if step in self.spectrum_steps:
                    self._record_spectrum(step, x_second, y, rows)
        if self._activations_due(step):
            self._record_activations(step, x, rows)
        if self._landscape_due(step):
            out = probes.landscape_tensors(self.model, self.loss_fn, x, y, self.lr, self.multipliers,
                                           p.landscape.direction, self._direction_generator())
            for mult, loss, diff in zip(self.multipliers, out["loss"], out["grad_diff"], strict=True):
                self._add(rows, step, f"landscape_loss@{mult:g}", 0, loss)
                self._add(rows, step, f"grad_diff@{mult:g}", 0, diff)
            self._add(rows, step, "beta", 0, out["beta"])
        if step % p.every != 0:
            return
        if p.ics.enabled:
            self.theta_t = {n: t.detach().clone() for n, t in self.model.named_parameters()}
        if p.bn_sigma.enabled and self.bn_numbers:
            for name, sigma in probes.bn_input_sigma(self.model, x).items():
                layer = self.bn_numbers[name]
                self._add(rows, step, "bn_sigma_mean", layer, sigma.mean(-1))
                self._add(rows, step, "bn_sigma_median", layer, sigma.median(-1).values)
                self._add(rows, step, "bn_sigma_max", layer, sigma.amax(-1))
                # Theorem 4.1 scales the gradient by gamma_j / sigma_j: record the scale and the ratio per unit
                weight = getattr(self.model.get_submodule(name), "weight", None)  # None: torch's affine=False
                gamma = torch.ones_like(sigma) if weight is None else weight.detach().abs().double()
                self._add(rows, step, "bn_gamma_median", layer, gamma.median(-1).values)
                self._add(rows, step, "bn_gain_median", layer, (gamma / sigma).median(-1).values)

    def _record_hessian(self, step: int, x, y, rows: list[MetricRows]) -> None:
        """The Hessian's top eigenvalues (and trace) at theta_t on the step's batch, in each mode."""
        h = self.hessian
        # a model without mode-dependent layers has one Hessian in both modes: measured once, in train mode
        for mode in h.modes if self.modes_differ else [m for m in h.modes if m == "train"] or h.modes[:1]:
            out = probes.hessian_eigenvalues(self.model, self.loss_fn, x, y, h.k, mode, h.iterations, h.tolerance,
                                             seed=self.hessian_seed + step)
            for rank, value in enumerate(out["eigenvalues"], start=1):
                self._add(rows, step, f"hessian_eig{rank}_{mode}", 0, value)
            self._add(rows, step, f"hessian_hvps_{mode}", 0, out["hvps"])
            if h.trace_samples:
                trace = probes.hessian_trace(self.model, self.loss_fn, x, y, h.trace_samples, mode,
                                             seed=self.hessian_seed + step)
                self._add(rows, step, f"hessian_trace_{mode}", 0, trace["trace"])
                self._add(rows, step, f"hessian_trace_stderr_{mode}", 0, trace["stderr"])

    def _record_spectrum(self, step: int, x, y, rows: list[MetricRows]) -> None:
        """The Hessian's eigenvalue density (SLQ) at theta_t on the step's batch, in each mode: its quadrature,
        Ritz value k and weight k as spectrum_node_<mode>#u<k> and spectrum_weight_<mode>#u<k> (k = run x
        iterations + i), and the trace and sum of squared eigenvalues it estimates. The density is a function of
        the quadrature (bnlab.probes.spectral_density)."""
        s = self.spectrum
        for mode in s.modes if self.modes_differ else [m for m in s.modes if m == "train"] or s.modes[:1]:
            out = probes.hessian_spectrum(self.model, self.loss_fn, x, y, mode, s.iterations, s.runs,
                                          seed=self.hessian_seed + 3 * step + 2)
            k = 0
            for values, weights in zip(out["ritz_values"], out["weights"], strict=True):
                for value, weight in zip(values, weights, strict=True):
                    self._add(rows, step, f"spectrum_node_{mode}#u{k}", 0, value)
                    self._add(rows, step, f"spectrum_weight_{mode}#u{k}", 0, weight)
                    k += 1
            for name in ("trace", "square_sum"):
                self._add(rows, step, f"spectrum_{name}_{mode}", 0, out[name])
            self._add(rows, step, f"spectrum_hvps_{mode}", 0, out["hvps"])

    def _record_theorems(self, step: int, x, y, rows: list[MetricRows]) -> None:
        """Theorems 4.1 and 4.2 at theta_t on the step's batch, summarized per BatchNorm layer (theorem_rows)."""
        t = self.theorems
        units = torch.Generator().manual_seed(self.hessian_seed + 7 * step + 1)  # Theorem 4.2's units, per step
        result = probes.batchnorm_theorems(self.model, self.loss_fn, x, y, t.units, units)
        for name, measured in result.items():
            for metric, value in theorem_rows(measured, t.tolerance).items():
                self._add(rows, step, metric, self.bn_numbers[name], value)

    def _add(self, rows: list[MetricRows], step: int, metric: str, layer: int, value) -> None:
        """One row per run: a stacked model's value has a run axis."""
        if not self.stacked:
            rows[0].add(step, metric, layer, value)
            return
        for run_rows, run_value in zip(rows, value.unbind(0), strict=True):
            run_rows.add(step, metric, layer, run_value)

    def _record_activations(self, step: int, x, rows: list[MetricRows]) -> None:
        quantiles = self.cfg.activations.quantiles
        stats = probes.activation_stats(self.model, x, self.act_modules, self.units_on_device, quantiles)
        for layer, s in stats.items():
            for r, run_rows in enumerate(rows):
                def of_run(t, r=r):  # a stacked model's stats and units have a leading run axis
                    return t[r] if self.stacked else t

                for row, unit in enumerate(of_run(self.unit_labels[layer])):
                    run_rows.add(step, f"act_mean#u{unit}", layer, of_run(s["mean"])[row])
                    run_rows.add(step, f"act_var#u{unit}", layer, of_run(s["var"])[row])
                    for q, value in zip(quantiles, of_run(s["quantiles"])[row], strict=True):
                        run_rows.add(step, f"act_q{q:g}#u{unit}", layer, value)

    def after_step(self, step: int, x, y, rows: list[MetricRows]) -> None:
        if not self.cfg.ics.enabled or step % self.cfg.every != 0:
            return
        rng_after = rng_state(x.device)
        params = dict(self.model.named_parameters())
        updated = {n: t.detach().clone() for n, t in params.items()}
        with torch.no_grad():
            for n, t in params.items():
                t.copy_(self.theta_t[n])
        set_rng_state(self.rng_before, x.device)  # the step's own random draw
        result = probes.ics_tensors(self.model, self.loss_fn, x, y, updated, self.ics_layers)
        with torch.no_grad():
            for n, t in params.items():
                t.copy_(updated[n])
        set_rng_state(rng_after, x.device)
        for name, values in result.items():
            self._add(rows, step, "ics_l2", self.number[name], values["l2"])
            self._add(rows, step, "ics_cos", self.number[name], values["cos"])


@contextmanager
def second_order_layout(model: nn.Module, x: torch.Tensor):
    """Hessian-vector products (double backward) through BatchNorm are slower in channels-last on a CPU
    (400 against 318 ms for a smoke VGG, where its first-order step is 1.4x faster; without BatchNorm they
    are faster in it, 240 against 300 ms): on a CPU a model with BatchNorm runs the curvature probes in the
    default layout, converted in place (the same parameter objects, so the optimizer's references hold)
    and back. Yields the batch in the layout the probes run in."""
    if x.device.type != "cpu" or x.dim() != 4 or x.is_contiguous() or \
            not x.is_contiguous(memory_format=torch.channels_last) or not probes.batchnorm_layers(model):
        yield x
        return
    model.to(memory_format=torch.contiguous_format)
    try:
        yield x.contiguous()
    finally:
        model.to(memory_format=torch.channels_last)


def theorem_rows(r: dict, tolerance: float) -> dict[str, float]:
    """One layer's measurement (bnlab.probes.batchnorm_theorems) as metrics over its units: the share of units
    where each inequality holds (a side within `tolerance` x the first term still counts), the gaps
    (right - left side) / first term (0: tight; below 0: violated), and each reduction term / the first. For
    Theorem 4.2 also the exact identity with eps included (its gap is rounding: within `tolerance` both ways),
    how far eps moves the printed bound, and the share of the printed bound's failures that eps explains.
    Units whose gradient vanishes (first term 0: both sides 0) count as holding, with gap 0. Medians are
    torch's: the lower middle value of an even count."""
    def ratio(a, b):
        return torch.where(b > 0, a / torch.where(b > 0, b, 1), torch.zeros_like(a))

    first41 = r["first"]
    gap41, printed41 = ratio(r["rhs41"] - r["lhs41"], first41), ratio(r["rhs41_printed"] - r["lhs41"], first41)
    size42 = r["hessian_term"].abs() + r["reduction42"].abs()
    gap42 = ratio(r["rhs42"] - r["lhs42"], size42)
    exact42 = ratio(r["rhs42_exact"] - r["lhs42"], size42)  # an equality: what is left is rounding
    eps42 = ratio(r["rhs42"] - r["rhs42_exact"], size42)  # what eps moves the printed bound by
    failing = gap42 < -tolerance
    return {
        "thm41_holds": float((gap41 >= -tolerance).double().mean()),
        "thm41_printed_holds": float((printed41 >= -tolerance).double().mean()),
        "thm41_gap_median": float(gap41.median()), "thm41_gap_min": float(gap41.min()),
        "thm41_printed_gap_median": float(printed41.median()), "thm41_printed_gap_min": float(printed41.min()),
        "thm41_mean_share": float(ratio(r["mean_term"], first41).median()),
        "thm41_corr_share": float(ratio(r["corr_term"], first41).median()),
        "thm41_scale": float(r["scale"].median()),
        "thm_corr_positive": float((r["corr"] > 0).double().mean()),
        "thm42_holds": float((gap42 >= -tolerance).double().mean()),
        "thm42_gap_median": float(gap42.median()), "thm42_gap_min": float(gap42.min()),
        "thm42_exact_holds": float((exact42.abs() <= tolerance).double().mean()),
        "thm42_exact_gap_max": float(exact42.abs().max()),
        "thm42_eps_min": float(eps42.min()),
        # of the units where the printed bound fails, the share whose exact identity holds: failures eps explains
        "thm42_explained": float((exact42[failing].abs() <= tolerance).double().mean()) if failing.any() else 1.0,
        "thm42_reduction_share": float(ratio(r["reduction42"], r["hessian_term"].abs()).median()),
        "thm42_hessian_nonneg": float((r["hessian_term"] >= 0).double().mean()),
    }


def step_kind(p, enabled: bool, step: int, steps: int) -> str:
    """What the probes do at `step` of a run of `steps` steps (p: its probes config; enabled:
    scheduled_probes_enabled of it): "probe" (every enabled probe; step 0 and every `p.every` steps), "early"
    (the landscape probe alone, at its denser interval in the early window), "after" (the activation probe
    alone, the step after a probe step, when `consecutive` is set) or "plain" (nothing)."""
    if not enabled:
        return "plain"
    if step % p.every == 0:
        return "probe"
    if p.landscape.enabled and in_early_grid(p, step, steps):
        return "early"
    if p.activations.enabled and p.activations.consecutive and step % p.every == 1:
        return "after"
    return "plain"


def early_window_end(p, steps: int) -> int:
    """The first step after the landscape's early window."""
    return math.ceil(p.landscape.early.until * steps)


def spectrum_steps(spectrum, steps: int) -> set[int]:
    """The steps the spectrum probe measures: round(f x steps) for each fraction f of `at`, the last step at most."""
    return {min(round(f * steps), steps - 1) for f in spectrum.at}


def in_early_grid(p, step: int, steps: int) -> bool:
    return step < early_window_end(p, steps) and step % p.landscape.early.every == 0
