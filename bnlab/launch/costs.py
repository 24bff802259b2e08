"""What a run costs: its steps counted by kind (a plain step, a probe step, ...), times a cost per kind.

The costs are measured (scripts/bench.py, on the device at hand) or, for planning, taken from the table
below: seconds per training step of one run on a 2-core x86 CPU while another run trains beside it (how
`make reproduce-* JOBS=2` trains), wall_time_s / steps from the run summaries of
`make reproduce-all SCALE=smoke` (VGG at width 1/8, channels-last) and of the full-width calibration runs,
which set VGG_WIDTH_EXPONENT (3.1 s a step at width 1 in the default layout, about 0.85x that in
channels-last by a side-by-side step timing, against 0.078 at 1/8: small convolutions do not use the cores
fully, so the cost grows slower than width squared). Probes every 40 (VGG) or 20 (DLN) steps.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from bnlab.config import scheduled_probes_enabled
from bnlab.models import model_family
from bnlab.norms import normalization
from bnlab.training.probe_schedule import early_window_end, spectrum_steps, step_kind

STEP_SECONDS = {"vgg": {"none": 0.076, "batch": 0.078, "l1": 0.081, "l2": 0.100, "linf": 0.108},
                "dln": {"none": 0.0035, "batch": 0.0065, "l1": 0.012, "l2": 0.013, "linf": 0.0135}}
PROBED_STEP_FACTOR = {"vgg": 1.6, "dln": 2.0}  # a probed run's mean step against an unprobed one's ...
PROBED_EVERY = {"vgg": 40, "dln": 20}  # ... with probes every this many steps (smoke scale's); a probe step's own cost
NOISE_STEP_FACTOR = 1.8  # noisy BatchNorm, or its noise alone: drawing the noise and probing it (2.0 before the
# noise kept the channels-last layout)
VGG_WIDTH_EXPONENT = 1.7
# A Hessian-vector product (double backward) against a plain training step: about 0.22 s against 0.107 for VGG
# at width 1/8 with BatchNorm in the default layout, 0.008-0.017 s against 0.0065 for the DLN (this CPU, the
# curvature runs). Since the training step went channels-last (0.078 s) the products stay in the default layout,
# so the factor is low for VGG; Lanczos' iteration limit, counted in full, is seldom reached, and the two
# roughly cancel: the smoke curvature runs are predicted at 1.2-1.4x their time.
HVP_STEP_FACTOR = 2.0
COST_MODEL = [STEP_SECONDS, PROBED_STEP_FACTOR, PROBED_EVERY, NOISE_STEP_FACTOR, VGG_WIDTH_EXPONENT, HVP_STEP_FACTOR]


def step_kinds(cfg) -> dict[str, int]:
    """What the run `cfg` describes is made of: its setup (building the Trainer: data onto the device, the
    model), its first step (with its first probe and evaluation and any one-time warm-up, such as cuDNN's
    autotuning on a GPU), its other steps by kind (bnlab.training.probe_schedule.step_kind: plain, probe,
    early, after) and its other evaluations (bnlab.training.loop.Trainer.fit: every `eval.every` steps, and of
    the trained model)."""
    enabled, steps, every = scheduled_probes_enabled(cfg), cfg.train.steps, cfg.probes.every
    kinds = {"setup": 1, "first": 1, "plain": 0, "probe": 0, "early": 0, "after": 0}
    # The early window step by step; after it a step's kind depends only on step % every: count the steps of
    # each residue (a run of 1e6 steps is counted as fast as one of 100)
    window = min(steps, max(1, early_window_end(cfg.probes, steps))) if enabled else 1
    for step in range(1, window):
        kinds[step_kind(cfg.probes, enabled, step, steps)] += 1
    for residue in range(every):
        first = window + (residue - window) % every
        if first < steps:
            kinds[step_kind(cfg.probes, enabled, first, steps)] += len(range(first, steps, every))
    every = cfg.data.eval.every if cfg.data.name == "cifar10" else None
    kinds["evaluations"] = len(range(every, steps, every)) + 1 if every else 0
    for curvature in CURVATURE_PROBES:  # measurements at their own steps, on top of the step's own kind
        probe = OmegaConf.select(cfg, f"probes.{curvature}")
        if probe is not None and probe.enabled:
            kinds[curvature] = len(spectrum_steps(probe, steps)) if curvature == "spectrum" else \
                len(range(0, steps, probe.every))
    return kinds


CURVATURE_PROBES = ("hessian", "theorems", "spectrum")


def hessian_vector_products(cfg) -> dict[str, int]:
    """Hessian-vector products per measurement of each curvature probe, at most: Lanczos' iteration limit and
    the trace's samples in each mode; for the theorems three per drawn unit of every BatchNorm layer, each
    through the network above its layer only, counted as half a product."""
    h, t, s = cfg.probes.hessian, OmegaConf.select(cfg, "probes.theorems"), OmegaConf.select(cfg, "probes.spectrum")
    # a network whose modes compute one function is measured in one (bnlab.probes.modes_differ)
    differ = cfg.norm.kind != "none" or cfg.norm.noise.enabled
    products = {"hessian": (len(h.modes) if differ else 1) * (h.iterations + h.trace_samples)}
    if s is not None and s.enabled:
        products["spectrum"] = (len(s.modes) if differ else 1) * s.iterations * s.runs
    if t is not None and t.enabled:
        from bnlab.models import build_model
        from bnlab.probes import theorem_layers

        products["theorems"] = 1.5 * t.units * len(theorem_layers(build_model(cfg)))
    return products


def predicted_seconds(cfg, costs: dict[str, float]) -> float:
    """A run's time from the cost (seconds) of each of its parts (step_kinds)."""
    return sum(count * costs[kind] for kind, count in step_kinds(cfg).items() if count)


def planning_costs(cfg) -> dict[str, float]:
    """The table's cost of each part of the run `cfg` on a 2-core CPU, one of two runs at a time. The table
    gives a probed run's mean step; here a probe step carries all of the probes' extra cost."""
    # a family or norm not in the table is planned as the measured one it declares (its registry entry)
    family, norm = model_family(cfg.model.name).cost_as, normalization(cfg.norm.kind).cost_as
    if family not in STEP_SECONDS or norm not in STEP_SECONDS[family]:
        raise ValueError(f"cost_as: {family!r} / {norm!r} (of {cfg.model.name} / {cfg.norm.kind}) is not a measured "
                         f"family / norm of bnlab.launch.costs.STEP_SECONDS: {', '.join(STEP_SECONDS)} / "
                         f"{', '.join(STEP_SECONDS['vgg'])}")
    per_step = STEP_SECONDS[family][norm]
    if cfg.model.name == "vgg":  # VGG's width multiplier (another family's width means something else)
        per_step *= (cfg.model.width / 0.125) ** VGG_WIDTH_EXPONENT
    if cfg.norm.noise.enabled:
        per_step *= NOISE_STEP_FACTOR
    # what a probe step adds is fixed (passes through the model), whatever the interval between probe steps
    probe = per_step * (1 + (PROBED_STEP_FACTOR[family] - 1) * PROBED_EVERY[family])
    first = probe if scheduled_probes_enabled(cfg) else per_step
    # an early step measures the landscape alone: the gradient, then a forward and backward pass per multiplier
    early = per_step * (2 + cfg.probes.landscape.multipliers.num)
    costs = {"setup": 0.0, "first": first, "plain": per_step, "probe": probe, "early": early, "after": per_step,
             "evaluations": 0.0}
    if any(OmegaConf.select(cfg, f"probes.{name}.enabled", default=False) for name in CURVATURE_PROBES):
        for curvature, products in hessian_vector_products(cfg).items():
            costs[curvature] = (1 + products) * HVP_STEP_FACTOR * per_step  # and one forward and backward pass
    return costs


# A run longer than this on a CPU is announced before it starts (a full-width VGG16: about 12 hours).
SLOW_ON_CPU_SECONDS = 3600.0


def estimated_seconds(cfg) -> float:
    """A run's training time on a 2-core CPU, one of two runs at a time (the table above)."""
    return predicted_seconds(cfg, planning_costs(cfg))
