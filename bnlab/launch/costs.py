"""What a run costs: its steps counted by kind (a plain step, a probe step, ...), times a cost per kind.

The costs are measured (scripts/bench.py, on the device at hand) or, for planning, taken from the table
below: seconds per training step of one run on a 2-core x86 CPU while another run trains beside it (how
`make reproduce-* JOBS=2` trains), wall_time_s / steps from the run summaries of
`make reproduce-all SCALE=smoke` (VGG at width 1/8) and of the full-width calibration runs, which set
VGG_WIDTH_EXPONENT (3.1 s a step at width 1 against 0.107 at 1/8: small convolutions do not use the
cores fully, so the cost grows slower than width squared). Probes every 40 (VGG) or 20 (DLN) steps.
"""

from __future__ import annotations

from bnlab.config import probes_enabled
from bnlab.training.probe_schedule import step_kind

STEP_SECONDS = {"vgg": {"none": 0.085, "batch": 0.107, "l1": 0.125, "l2": 0.121, "linf": 0.151},
                "dln": {"none": 0.0035, "batch": 0.0065, "l1": 0.012, "l2": 0.013, "linf": 0.0135}}
PROBED_STEP_FACTOR = {"vgg": 1.35, "dln": 2.0}  # a probed run's mean step against an unprobed one's
NOISE_STEP_FACTOR = 1.45  # noisy BatchNorm, or its noise alone: drawing the noise and probing it
VGG_WIDTH_EXPONENT = 1.6
COST_MODEL = [STEP_SECONDS, PROBED_STEP_FACTOR, NOISE_STEP_FACTOR, VGG_WIDTH_EXPONENT]  # what estimates depend on


def step_kinds(cfg) -> dict[str, int]:
    """What the run `cfg` describes is made of: its setup (building the Trainer: data onto the device, the
    model), its first step (with its first probe and evaluation and any one-time warm-up, such as cuDNN's
    autotuning on a GPU), its other steps by kind (bnlab.training.probe_schedule.step_kind: plain, probe,
    after) and its other evaluations (bnlab.training.loop.Trainer.fit: every `eval.every` steps, and of the
    trained model)."""
    enabled, steps, every = probes_enabled(cfg), cfg.train.steps, cfg.probes.every
    kinds = {"setup": 1, "first": 1, "plain": 0, "probe": 0, "after": 0}
    # A step's kind depends only on step % every: count the steps 1 ... steps-1 of each residue (a run of
    # 1e6 steps is counted as fast as one of 100)
    for residue in range(every):
        count = len(range(residue or every, steps, every))
        kinds[step_kind(cfg.probes, enabled, residue or every)] += count
    every = cfg.data.eval.every if cfg.data.name == "cifar10" else None
    kinds["evaluations"] = len(range(every, steps, every)) + 1 if every else 0
    return kinds


def predicted_seconds(cfg, costs: dict[str, float]) -> float:
    """A run's time from the cost (seconds) of each of its parts (step_kinds)."""
    return sum(count * costs[kind] for kind, count in step_kinds(cfg).items())


def planning_costs(cfg) -> dict[str, float]:
    """The table's cost of each part of the run `cfg` on a 2-core CPU, one of two runs at a time. The table
    gives a probed run's mean step; here a probe step carries all of the probes' extra cost."""
    model = cfg.model.name
    per_step = STEP_SECONDS[model].get(cfg.norm.kind, max(STEP_SECONDS[model].values()))
    if model == "vgg":
        per_step *= (cfg.model.width / 0.125) ** VGG_WIDTH_EXPONENT
    if cfg.norm.noise.enabled:
        per_step *= NOISE_STEP_FACTOR
    probe = per_step * (1 + (PROBED_STEP_FACTOR[model] - 1) * cfg.probes.every)
    first = probe if probes_enabled(cfg) else per_step
    return {"setup": 0.0, "first": first, "plain": per_step, "probe": probe, "after": per_step, "evaluations": 0.0}


def estimated_seconds(cfg) -> float:
    """A run's training time on a 2-core CPU, one of two runs at a time (the table above)."""
    return predicted_seconds(cfg, planning_costs(cfg))
