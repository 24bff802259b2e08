"""Config composition, validation and run identity.

A run's identity (its key) is the resolved config minus the `runtime`, `logger` and `experiment_name`
sections, the sweep helper `optim.lr_factor`, where the data live and how they are read (`DATA_LOCATION`),
and the scale settings of other models: everything that changes what is computed, and nothing that only
changes how or where.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationKeyError

from bnlab.data.cifar10 import SOURCES, resolve_source
from bnlab.data.datasets import INPUT_SCALES
from bnlab.models import model_family, num_layers
from bnlab.norms import ADDED_NORM_KEYS, POPULATION_STARTS, STATISTICS, norm_setting, normalization
from bnlab.probes.measurement import MODES
from bnlab.util.checks import ConfigError, check, check_positive

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
NOT_IDENTITY = ("runtime", "logger", "experiment_name", "sweep_skips", "hydra")
DATA_LOCATION = ("root", "cache_dir", "download", "sha256")
PROBES = ("ics", "landscape", "activations", "bn_sigma", "hessian", "theorems", "spectrum")
# probes added after runs were stored: part of a run's identity only when enabled
ADDED_PROBES = ("hessian", "theorems", "spectrum")
# keys added after runs were stored, with the value those runs had: left out of the identity at that value
ADDED_MODEL_KEYS = {"vgg": {"init_gain": 1.0}, "dln": {"bias": False}}
# A scale's settings that a model key carries into the identity already (model.init: ${scale.vgg.init}); left
# out of the scale's part, so that the runs stored before the scale set them keep their keys.
CARRIED_SCALE_KEYS = {"vgg": ("init", "init_gain", "norm_groups")}
ADDED_DATA_KEYS = {"gaussian": {"target_spectrum": "gaussian"}}
TARGET_SPECTRA = ("gaussian", "orthogonal")

if not OmegaConf.has_resolver("mul"):
    OmegaConf.register_new_resolver("mul", lambda a, b: float(a) * float(b))
if not OmegaConf.has_resolver("imul"):  # a multiple of an interval in steps, an integer
    OmegaConf.register_new_resolver("imul", lambda a, b: int(a) * int(b))


# Keys of a user's own, added with `+ext.NAME=value` (part of the run's identity); any other new key is refused.
EXTENSION_NAMESPACE = "ext"


def check_overrides(overrides) -> None:
    """Refuse keys added with `+` or `++` (Hydra's "add a key"): a misspelt one would become part of the
    run's identity and train a new run. Keys of one's own go under `ext.`."""
    for override in overrides:
        if override.startswith("+"):
            key, _, value = override.lstrip("+").partition("=")
            if not key.startswith(f"{EXTENSION_NAMESPACE}.") and not key.startswith(("hydra.", "hydra/")):
                raise ConfigError(key, value, f"an existing key, set without + (check its spelling), or a key of "
                                              f"your own under {EXTENSION_NAMESPACE}. "
                                              f"(e.g. +{EXTENSION_NAMESPACE}.{key}={value})")


def compose(overrides: list[str] | None = None, with_hydra: bool = False) -> DictConfig:
    """The resolved config `bnlab-train` would run with these command-line overrides (no sweep).

    with_hydra=True returns the unresolved config with its hydra section (e.g. the sweeper's params)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    check_overrides(overrides or [])

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=list(overrides or []), return_hydra_config=with_hydra)
    return cfg if with_hydra else resolved(cfg)


def resolved(cfg: DictConfig) -> DictConfig:
    """A resolved, struct-mode copy without the hydra section. `data.source: auto` becomes the source
    actually found under data.root, so that it is part of the run's identity."""
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except InterpolationKeyError as err:
        missing = str(err).split("'")[1] if "'" in str(err) else str(err)
        if not missing.startswith("scale."):
            raise
        model = OmegaConf.select(cfg, "model.name")
        model_family(model)  # an unknown model, or a dataset it does not train on, is the error to report first
        _check_dataset(OmegaConf.select(cfg, "data.name"), model)
        raise ConfigError(err.full_key, f"${{{missing}}}",
                          f"a setting of the scale for model {model}: {missing} is not in "
                          f"configs/scale/{OmegaConf.select(cfg, 'scale.name')}.yaml (add it under {model}:, or "
                          f"choose a dataset that model trains on)") from None
    container.pop("hydra", None)
    data = container.get("data", {})
    if data.get("source") == "auto":
        data["source"] = resolve_source(Path(data["root"]), "auto")
    out = OmegaConf.create(container)
    OmegaConf.set_struct(out, True)
    return out


# Every switch of the configs: true or false only (a string like "yes" would read as true).
BOOLEANS = ("norm.noise.enabled", "norm.center_before_norm", "data.augment", "data.download", "model.bias",
            "model.activation_consecutive", "logger.wandb.enabled", "runtime.progress",
            *(f"probes.{name}.enabled" for name in PROBES))


def validate(cfg: DictConfig) -> None:
    """Fail fast, before any work, on values that cannot work."""
    for key in BOOLEANS:
        value = OmegaConf.select(cfg, key, default=None)
        check(value is None or isinstance(value, bool), key, value, "true or false")
    family = model_family(cfg.model.name)  # each raises ConfigError naming what is registered
    normalization(cfg.norm.kind)
    statistics = norm_setting(cfg.norm, "statistics")
    check(statistics in STATISTICS, "norm.statistics", statistics, " or ".join(STATISTICS))
    check(statistics == "batch" or normalization(cfg.norm.kind).population, "norm.statistics", statistics,
          f"batch: norm.kind={cfg.norm.kind} keeps no running statistics (population: norm=batch_population)")
    start = norm_setting(cfg.norm, "population_start")
    check(start in POPULATION_STARTS, "norm.population_start", start, " or ".join(POPULATION_STARTS))
    if "groups" in cfg.norm:
        check_positive(cfg, "norm.groups", integer=True)
    check(isinstance(cfg.seed, int) and cfg.seed >= 0, "seed", cfg.seed, "an integer >= 0")
    check_positive(cfg, "optim.lr")
    check(cfg.optim.momentum >= 0, "optim.momentum", cfg.optim.momentum, "a number >= 0")
    check(cfg.optim.weight_decay >= 0, "optim.weight_decay", cfg.optim.weight_decay, "a number >= 0")
    check_positive(cfg, "train.steps", integer=True)
    check(cfg.train.dtype in ("float32", "float64"), "train.dtype", cfg.train.dtype, "float32, float64")
    check_positive(cfg, "norm.eps")
    check(0 <= cfg.norm.momentum <= 1, "norm.momentum", cfg.norm.momentum, "a number in [0, 1]")
    c = cfg.norm.noise.constants
    check(c.n_mu >= 0, "norm.noise.constants.n_mu", c.n_mu, "a number >= 0")
    check(c.n_sigma >= 1, "norm.noise.constants.n_sigma", c.n_sigma, "a number >= 1")
    check(c.r_mu >= 0, "norm.noise.constants.r_mu", c.r_mu, "a number >= 0")
    check(c.r_sigma >= 0, "norm.noise.constants.r_sigma", c.r_sigma, "a number >= 0")
    _check_dataset(cfg.data.name, cfg.model.name)
    family.validate(cfg)
    DATA_CHECKS[cfg.data.name](cfg)
    _validate_probes(cfg, num_layers(cfg))
    _validate_runtime(cfg)


def _validate_cifar10(cfg):
    check(cfg.data.input_scale in INPUT_SCALES, "data.input_scale", cfg.data.input_scale, ", ".join(INPUT_SCALES))
    check(cfg.data.source in SOURCES, "data.source", cfg.data.source, ", ".join(SOURCES))
    check_positive(cfg, "data.batch_size", integer=True)
    check_positive(cfg, "data.eval.every", integer=True)
    check_positive(cfg, "data.eval.batch_size", integer=True)
    for key in ("data.train_subset", "data.eval.train_examples", "data.eval.test_examples"):
        if OmegaConf.select(cfg, key) is not None:
            check_positive(cfg, key, integer=True)
    subset = cfg.data.train_subset
    check(subset is None or subset >= cfg.data.batch_size, "data.train_subset", subset,
          f"null or at least data.batch_size ({cfg.data.batch_size}) images")


def _validate_gaussian(cfg):
    check(cfg.data.target_spectrum in TARGET_SPECTRA, "data.target_spectrum", cfg.data.target_spectrum,
          ", ".join(TARGET_SPECTRA))
    check_positive(cfg, "data.num_samples", integer=True)
    check_positive(cfg, "data.input_std")
    check_positive(cfg, "data.target_std")
    check(cfg.data.loss in ("sum", "half_sum", "mean"), "data.loss", cfg.data.loss, "sum, half_sum, mean")


DATA_CHECKS = {"cifar10": _validate_cifar10, "gaussian": _validate_gaussian}
DATA_GROUPS = {"cifar10": "data=cifar10 or data=cifar10_jpeg", "gaussian": "data=gaussian"}  # configs/data/


def _check_dataset(data: str, model: str) -> None:
    """The dataset is one bnlab reads (bnlab.data.datasets) and one the model family trains on."""
    datasets = model_family(model).datasets
    choices = "; ".join(f"{d} ({DATA_GROUPS.get(d, d)})" for d in datasets)
    check(data in datasets and data in DATA_CHECKS, "data", data, f"{choices}: what {model} trains on")


def _validate_probes(cfg, layers: int):
    p = cfg.probes
    check_positive(cfg, "probes.every", integer=True)
    layer_sets = [("probes.ics.layers", p.ics.layers, p.ics.enabled),
                  ("probes.activations.layers", p.activations.layers, p.activations.enabled)]
    for key, value, enabled in layer_sets:
        if value == "all" or not enabled:  # (a shallower model than figure 3's with the probe off is fine)
            continue
        good = isinstance(value, ListConfig | list) and len(value) > 0 and all(
            isinstance(v, int) and 1 <= v <= layers for v in value)
        allowed = f"'all' or a list of layer numbers from 1 to {layers} (this model's conv/linear layers)"
        check(good, key, value, allowed)
    m = p.landscape.multipliers
    check(p.landscape.direction in ("gradient", "random"), "probes.landscape.direction", p.landscape.direction,
           "gradient, random")
    check(m.spacing in ("linear", "log"), "probes.landscape.multipliers.spacing", m.spacing, "linear, log")
    check(isinstance(m.start, int | float) and m.start > 0, "probes.landscape.multipliers.start", m.start,
           "a number > 0")
    check(isinstance(m.stop, int | float) and m.stop >= m.start, "probes.landscape.multipliers.stop", m.stop,
           f"a number >= start ({m.start})")
    check_positive(cfg, "probes.landscape.multipliers.num", integer=True)
    check_positive(cfg, "probes.landscape.early.every", integer=True)
    until = p.landscape.early.until
    check(isinstance(until, int | float) and 0 <= until <= 1, "probes.landscape.early.until", until,
           "a fraction of the run in [0, 1] (0: no early window)")
    check_positive(cfg, "probes.activations.units", integer=True)
    q = p.activations.quantiles
    check(len(q) > 0 and all(0 <= v <= 1 for v in q), "probes.activations.quantiles", list(q), "numbers in [0, 1]")
    h = p.hessian
    check(isinstance(h.enabled, bool), "probes.hessian.enabled", h.enabled, "true or false")
    if h.enabled:
        check_positive(cfg, "probes.hessian.every", integer=True)
        check_positive(cfg, "probes.hessian.k", integer=True)
        modes = list(h.modes) if isinstance(h.modes, ListConfig | list) else h.modes
        good = isinstance(modes, list) and 0 < len(modes) == len(set(modes)) and set(modes) <= set(MODES)
        check(good, "probes.hessian.modes", modes,
               "a list of train (batch statistics) and/or eval (running statistics)")
        check(isinstance(h.iterations, int) and h.iterations >= h.k, "probes.hessian.iterations", h.iterations,
               f"an integer >= probes.hessian.k ({h.k})")
        check_positive(cfg, "probes.hessian.tolerance")
        check(isinstance(h.trace_samples, int) and h.trace_samples >= 0, "probes.hessian.trace_samples",
               h.trace_samples, "an integer >= 0 (0: no trace)")
    _validate_spectrum(p.get("spectrum"))
    t = p.theorems
    check(isinstance(t.enabled, bool), "probes.theorems.enabled", t.enabled, "true or false")
    if t.enabled:
        check_positive(cfg, "probes.theorems.every", integer=True)
        check_positive(cfg, "probes.theorems.units", integer=True)
        check(isinstance(t.tolerance, int | float) and 0 <= t.tolerance < 1, "probes.theorems.tolerance",
               t.tolerance, "a number in [0, 1)")


def _validate_runtime(cfg):
    r = cfg.runtime
    device = str(r.device)
    good = device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
    # Whether CUDA works is checked where the run trains (bnlab.util.devices), not here: a login node
    # without a GPU validates the runs it submits to GPU nodes.
    check(good, "runtime.device", device, "auto, cpu, cuda, cuda:N")
    check(r.threads is None or (isinstance(r.threads, int) and r.threads > 0), "runtime.threads", r.threads,
           "null or a positive integer")
    check_positive(cfg, "runtime.log_every", integer=True)
    check(r.tf32 == "auto" or isinstance(r.tf32, bool), "runtime.tf32", r.tf32, "auto, true or false")
    for key in ("compile", "cudnn_benchmark", "deterministic", "stack_seeds"):
        check(isinstance(r[key], bool), f"runtime.{key}", r[key], "true or false")
    check(r.channels_last in ("auto", True, False), "runtime.channels_last", r.channels_last, "auto, true or false")
    if r.checkpoint_every is not None:
        check_positive(cfg, "runtime.checkpoint_every", integer=True)
    check_positive(cfg, "logger.wandb.every_n_steps", integer=True)


def _validate_spectrum(s) -> None:
    if s is None:  # a stored run's config from before the probe
        return
    check(isinstance(s.enabled, bool), "probes.spectrum.enabled", s.enabled, "true or false")
    if not s.enabled:
        return
    at = list(s.at) if isinstance(s.at, ListConfig | list) else s.at
    check(isinstance(at, list) and len(at) > 0 and all(isinstance(f, int | float) and 0 <= f <= 1 for f in at),
          "probes.spectrum.at", at, "a list of fractions of the run in [0, 1]")
    modes = list(s.modes) if isinstance(s.modes, ListConfig | list) else s.modes
    check(isinstance(modes, list) and 0 < len(modes) == len(set(modes)) and set(modes) <= set(MODES),
          "probes.spectrum.modes", modes, "a list of train (batch statistics) and/or eval (running statistics)")
    for key in ("iterations", "runs"):
        check(isinstance(s[key], int) and not isinstance(s[key], bool) and s[key] >= 1, f"probes.spectrum.{key}",
              s[key], "an integer >= 1")


def tf32(cfg: DictConfig) -> bool:
    """Whether CUDA matmuls and convolutions may use TF32 (`runtime.tf32`). `auto`: for VGG, not for the DLN,
    whose 25-map product amplifies TF32's rounding into a different trajectory: emulated on a CPU, 2,000 smoke
    steps of the standard DLN ended as far from fp32's loss as another seed's (issue 27)."""
    return model_family(cfg.model.name).tf32 if cfg.runtime.tf32 == "auto" else bool(cfg.runtime.tf32)


def cuda_settings(cfg: DictConfig) -> dict:
    """How a run sets up CUDA. With `runtime.deterministic`, deterministic algorithms and no cuDNN benchmark:
    its timing picks convolution algorithms afresh in each process, so a resumed run could round otherwise."""
    deterministic = bool(cfg.runtime.deterministic)
    return {"tf32": tf32(cfg), "deterministic": deterministic,
            "cudnn_benchmark": bool(cfg.runtime.cudnn_benchmark) and not deterministic}


def identity(cfg: DictConfig) -> dict:
    """The part of the config that defines what a run computes."""
    container = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_IDENTITY:
        container.pop(key, None)
    container.get("optim", {}).pop("lr_factor", None)
    for key in DATA_LOCATION:
        container.get("data", {}).pop(key, None)
    container.get("data", {}).get("eval", {}).pop("batch_size", None)
    probes = container.get("probes", {})
    for name in ADDED_PROBES:  # left out while off, so that the runs stored before it keep their keys
        if not probes.get(name, {}).get("enabled", False):
            probes.pop(name, None)
    model = container.get("model", {}).get("name")
    for section, added in (("model", ADDED_MODEL_KEYS.get(model, {})),
                           ("data", ADDED_DATA_KEYS.get(container.get("data", {}).get("name"), {})),
                           ("norm", ADDED_NORM_KEYS)):
        for key, stored in added.items():
            if container[section].get(key) == stored:
                container[section].pop(key)
    scale = container.get("scale", {})
    for other in [k for k, v in scale.items() if isinstance(v, dict) and k != model]:
        scale.pop(other)
    for key in CARRIED_SCALE_KEYS.get(model, ()):
        scale.get(model, {}).pop(key, None)
    return container


def dry_run() -> bool:
    """BNLAB_DRY_RUN set (and not 0): bnlab-train and bnlab-figure check and plan, and train nothing."""
    return os.environ.get("BNLAB_DRY_RUN", "0") not in ("", "0")


def probes_enabled(cfg: DictConfig) -> bool:
    """Whether the run measures anything beyond training (a stored run's config may predate a probe)."""
    return any(OmegaConf.select(cfg, f"probes.{name}.enabled", default=False) for name in PROBES)


def scheduled_probes_enabled(cfg: DictConfig) -> bool:
    """Whether a probe measured at the steps `probes.every` sets is on (the curvature probes keep their own steps)."""
    return any(OmegaConf.select(cfg, f"probes.{name}.enabled", default=False) for name in SCHEDULED_PROBES)


def trajectory_identity(cfg: DictConfig) -> dict:
    """The identity without the probes. Probes never change a run's trajectory (the tests check this bit
    for bit), so runs that agree here have identical training metrics."""
    ident = identity(cfg)
    ident.pop("probes", None)
    return ident


# probes measured at the steps `probes.every` sets (the curvature probes have their own `every`)
SCHEDULED_PROBES = ("ics", "landscape", "activations", "bn_sigma")


def probes_cover(bigger: DictConfig, smaller: DictConfig) -> bool:
    """Whether a run with `bigger`'s probes measures everything a run with `smaller`'s measures, the same way
    at the same steps: every probe `smaller` enables is enabled in `bigger` with the same settings (and the
    same `every` for those it schedules). Probes never change a run's trajectory, so a run of the same
    trajectory with covering probes serves the other: its metrics hold all of the other's, bit for bit."""
    big, small = identity(bigger).get("probes", {}), identity(smaller).get("probes", {})
    enabled = [name for name in PROBES if small.get(name, {}).get("enabled", False)]
    if any(name in SCHEDULED_PROBES for name in enabled) and big.get("every") != small.get("every"):
        return False
    return all(big.get(name) == small[name] for name in enabled)


def skipped_in_sweep(cfg: DictConfig) -> str | None:
    """The entry of `sweep_skips` that leaves this run out of its experiment's sweep (every dotted key of the
    entry has its value here: {model.name: dln, norm.kind: batch_after_relu}), as text; None when none does."""
    for entry in cfg.get("sweep_skips") or []:
        if all(OmegaConf.select(cfg, key, default=None) == value for key, value in entry.items()):
            return ", ".join(f"{key}={value}" for key, value in entry.items())
    return None


def norm_label(cfg: DictConfig) -> str:
    """The normalization as run keys and logs name it: norm.kind, then +population (norm.statistics) and +noise."""
    statistics = norm_setting(cfg.norm, "statistics")
    return cfg.norm.kind + ("" if statistics == "batch" else f"+{statistics}") + \
        ("+noise" if cfg.norm.noise.enabled else "")


def run_key(cfg: DictConfig) -> str:
    """Readable and unique: model-norm-lr-seed, then a hash of the whole identity."""
    ident = identity(cfg)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    return f"{cfg.model.name}-{norm_label(cfg)}-lr{cfg.optim.lr:g}-seed{cfg.seed}-{digest}"


def load_plugins() -> list[str]:
    """Import the modules named in BNLAB_PLUGINS (comma-separated, importable from the working directory or
    the environment): a user's own normalizations and model families, registered there with
    bnlab.norms.register_norm and bnlab.models.register_model, then exist in every process of a run or a
    sweep (each imports this module first). docs/extending.md."""
    import importlib
    import sys

    names = [n.strip() for n in os.environ.get("BNLAB_PLUGINS", "").split(",") if n.strip()]
    if names and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name.split(".")[0] and err.name != name:
                raise  # the plugin itself failed to import something: its own traceback says what
            raise ImportError(f"BNLAB_PLUGINS names {name!r}, which cannot be found ({err}); fix the name or "
                              f"run from the folder that holds it") from err
    return names


load_plugins()
