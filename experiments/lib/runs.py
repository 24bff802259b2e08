"""The runs behind a figure: expanded from its experiment config, read from the store, and selected.

A figure is a function of logged runs. `sweep(name, scale, seeds)` expands `configs/experiment/<name>.yaml`
exactly as `bnlab-train -m experiment=<name>` does (Hydra's basic sweeper: the cartesian product of the
swept values, in the order given), so both find the same run directories; `load(...)` reads them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from bnlab import store
from bnlab.config import DATA_LOCATION, NOT_IDENTITY, ConfigError, compose, resolved, skipped_in_sweep
from bnlab.data.datasets import classifies as data_classifies
from bnlab.models import MODEL_FAMILIES
from bnlab.norms import norm_setting


def sweep(name: str, scale: str, seeds: int, overrides: list[str] = ()) -> list[DictConfig]:
    """Resolved configs of every run of experiment `name` (its hydra.sweeper.params x seeds)."""
    base = [f"experiment={name}", f"scale={scale}", *overrides]
    hydra_cfg = compose(base, with_hydra=True)
    params = {k: str(v) for k, v in (hydra_cfg.hydra.sweeper.params or {}).items()}
    given = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in overrides}
    if "model" in given and "model" not in params:  # `model=` picks a figure's panels; this one has one model
        own = compose([f"experiment={name}", f"scale={scale}"]).model.name
        if given["model"] != own:
            raise ConfigError("model", given["model"], f"{own}: figure {name} draws the {own} only")
    for key in set(given) & set(params):  # the figure compares these values: one alone leaves nothing to compare
        if key == "model" and given[key] in params[key].split(","):
            continue  # a figure draws each model's panels on their own: `model=dln` keeps the DLN's
        raise ConfigError(key, given[key], f"no override: figure {name} sweeps {key} over {params[key]} and "
                                           f"compares them (bnlab-train trains single runs)")
    swept = [f"{k}={v}" for k, v in params.items() if k not in given]
    # Composing takes Hydra about 0.1 s a job: each configuration is composed once, its seeds set afterwards
    # and only then resolved, which is what the override seed=<s> does (tests/test_config.py compares the two)
    out = []
    for job in expand([*base, *swept]):
        unresolved = OmegaConf.to_container(compose(job, with_hydra=True), resolve=False)
        unresolved.pop("hydra")
        for seed in range(seeds):
            cfg = resolved(OmegaConf.create({**unresolved, "seed": seed}))
            if not skipped_in_sweep(cfg):  # a combination the experiment leaves out (its `sweep_skips`)
                out.append(cfg)
    return out


def changes_runs(override: str) -> bool:
    """Whether an override changes what a figure's runs compute: anything but where and how they run
    (runtime, logger, hydra), where the data lives, and `model=`, which keeps one model's panels."""
    key = override.lstrip("+~").split("=", 1)[0]
    neutral = key in ("model", "data.eval.batch_size") or key in [f"data.{k}" for k in DATA_LOCATION]
    return key.split(".")[0].split("/")[0] not in NOT_IDENTITY and not neutral


def expand(overrides: list[str]) -> list[list[str]]:
    """The jobs of a sweep, as Hydra's basic sweeper makes them: one list of overrides per element of the
    cartesian product of each key's values (a later override of a key replaces an earlier one, in its
    place), in the order given."""
    values: dict[str, list[str]] = {}
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.get_key_element()
        if o.is_sweep_override():
            values[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            values[key] = [f"{key}={o.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*values.values())]


@dataclass
class Run:
    cfg: DictConfig
    directory: Path
    _metrics: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def summary(self) -> dict:
        return store.read_summary(self.directory) or {}

    @property
    def metrics(self) -> pd.DataFrame:
        if self._metrics is None:
            self._metrics = store.read_metrics(self.directory)
        return self._metrics

    def series(self, metric: str, layer: int = 0) -> pd.Series:
        m = self.metrics
        return m[(m.metric == metric) & (m.layer == layer)].set_index("step")["value"]

    def tagged(self, base: str, layer: int = 0) -> pd.DataFrame:
        """Steps x multiplier (or unit) table of a tagged metric such as grad_diff@<m>."""
        m = self.metrics[self.metrics.layer == layer]
        parts = store.split_metric(m.metric)
        sel = parts.base == base
        tag = parts.multiplier[sel] if parts.multiplier[sel].notna().any() else parts.unit[sel]
        return m[sel].assign(tag=tag.values).pivot_table(index="step", columns="tag", values="value")


class MissingRuns(RuntimeError):
    pass


def load(cfgs: list[DictConfig]) -> list[Run]:
    runs, missing = [], []
    for cfg in cfgs:
        directory = store.find_run(cfg)
        (runs if store.is_finished(directory) else missing).append(Run(cfg, directory))
    if missing:
        names = "\n  ".join(str(r.directory) for r in missing[:10])
        raise MissingRuns(f"{len(missing)} of {len(cfgs)} runs this figure needs are not in the store yet:\n  {names}"
                          f"\nRun them with `make reproduce-<figure> SCALE=... SEEDS=...` (or bnlab-train -m ...).")
    return runs


def select(runs: list[Run], **where) -> list[Run]:
    """Runs whose config matches every dotted key = value (norm='batch' is short for norm.kind...)."""
    def value(run, key):
        if key == "norm":
            return norm_name(run.cfg)
        if key == "lr":
            return run.cfg.optim.lr
        node = run.cfg
        for part in key.split("."):
            node = node[part]
        return node

    def same(a, b):
        return np.isclose(a, b, rtol=1e-9) if isinstance(a, float) else a == b

    return [r for r in runs if all(same(value(r, k), v) for k, v in where.items())]


def norm_name(cfg: DictConfig) -> str:
    """The norm config group a run came from: none, batch, noisy_batch, batch_population, l1, ... (+noise if
    added)."""
    if norm_setting(cfg.norm, "statistics") == "population":
        return "batch_population" + ("+noise" if cfg.norm.noise.enabled else "")
    if cfg.norm.noise.enabled:
        return "noisy_batch" if cfg.norm.kind == "batch" else f"{cfg.norm.kind}+noise"
    return cfg.norm.kind


def by_model(runs: list[Run], model: str) -> list[Run]:
    return select(runs, **{"model.name": model})


def models_in(runs: list[Run]) -> list[str]:
    """The model families that have runs, in their registry's order (VGG first): a figure over both models
    drawn from one model's runs (`bnlab-figure NAME model=dln`) shows that model alone."""
    return [name for name in MODEL_FAMILIES if by_model(runs, name)]


def each_model(runs: list[Run]) -> list[tuple[str, list[Run]]]:
    """(display name, its runs) for each model family that has runs (models_in)."""
    return [(MODEL_FAMILIES[name].label, by_model(runs, name)) for name in models_in(runs)]


def classifies(run: Run) -> bool:
    """Judged by accuracy (a classifier, VGG) or by its loss alone (a regression, the DLN)."""
    return data_classifies(run.cfg.data.name)


def smoothed(series: pd.Series, steps: int) -> pd.Series:
    """Per-step batch values averaged over a trailing window of 2% of the run (the paper's curves are smoothed
    too): the training accuracy curves."""
    return series.rolling(max(1, steps // 50), min_periods=1).mean()
