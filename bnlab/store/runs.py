"""The run store: <runs>/<scale>/<run-key>/ holding config.yaml, metrics.parquet and summary.json.

metrics.parquet is tidy: one row per measurement with columns step, metric, layer, value. `layer` is the
paper's layer number (conv/linear layers counted from 1), 0 for whole-model metrics. Metric names:

    loss                                training loss of the step's batch, before the step's update
    ics_l2, ics_cos                     internal covariate shift (Definition 2.1), per layer
    landscape_loss@<m>, grad_diff@<m>   loss and gradient change at step multiplier m (lr multiples)
    beta                                "effective" beta-smoothness
    act_mean#u<j>, act_var#u<j>, act_q<q>#u<j>
                                        sampled unit j of a layer: batch mean, variance, quantile q
    bn_sigma_mean, bn_sigma_median, bn_sigma_max
                                        over units of the batch std of a BatchNorm layer's input
    hessian_eig<i>_<mode>               the i-th largest Hessian eigenvalue, mode train (batch statistics)
                                        or eval (running statistics); hessian_hvps_<mode>: products used
    hessian_trace_<mode>, hessian_trace_stderr_<mode>
                                        Hutchinson's trace estimate and its standard error
    spectrum_node_<mode>#u<k>, spectrum_weight_<mode>#u<k>
                                        the Hessian's eigenvalue density by SLQ: Ritz value k and its weight
                                        (k = Lanczos run x iterations + i); spectrum_trace_<mode>,
                                        spectrum_square_sum_<mode>: the tr(H) and tr(H^2) it estimates
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf

from bnlab.config import probes_cover, run_key, trajectory_identity
from bnlab.util.files import atomic_write

FINISHED = ("finished", "diverged")
log = logging.getLogger(__name__)


def runs_root(cfg: DictConfig) -> Path:
    return Path(cfg.runtime.runs_dir).expanduser()


def run_dir(cfg: DictConfig) -> Path:
    return runs_root(cfg) / cfg.scale.name / run_key(cfg)


def write_config(directory: Path, cfg: DictConfig) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / "config.yaml", lambda p: OmegaConf.save(cfg, p))


def write_summary(directory: Path, summary: dict) -> None:
    atomic_write(directory / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))


def metrics_frame(rows: dict[str, list]) -> pd.DataFrame:
    return pd.DataFrame({
        "step": pd.array(rows["step"], dtype="int64"),
        "metric": pd.Categorical(rows["metric"]),
        "layer": pd.array(rows["layer"], dtype="int16"),
        "value": pd.array(rows["value"], dtype="float64"),
    })


def write_metrics(directory: Path, rows: dict[str, list], name: str = "metrics.parquet") -> None:
    frame = metrics_frame(rows)
    atomic_write(directory / name, lambda p: frame.to_parquet(p, index=False))


def read_summary(directory: Path) -> dict | None:
    path = Path(directory) / "summary.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a damaged summary means the run is not known to be finished: it is run again


def is_finished(directory: Path) -> bool:
    """A run counts as done when its summary says finished/diverged and its metrics file is readable;
    a damaged run is trained again rather than drawn from."""
    summary = read_summary(directory)
    if not summary or summary.get("status") not in FINISHED:
        return False
    try:
        pq.read_metadata(Path(directory) / "metrics.parquet")
    except (OSError, pa.ArrowException) as exc:
        log.warning("run %s has unreadable metrics (%s); it will be trained again", directory, exc)
        return False
    return True


def find_run(cfg: DictConfig) -> Path:
    """Where the run `cfg` lives: its own directory, or, when that is not in the store, a finished run with the
    same trajectory whose probes cover its own (bnlab.config.probes_cover: an unprobed run is served by any
    probed twin, a default-probed one by a curvature run of the same trajectory)."""
    own = run_dir(cfg)
    if is_finished(own):
        return own
    prefix = own.name.rsplit("-", 1)[0] + "-"  # model-norm-lr-seed: every candidate shares it
    wanted = trajectory_identity(cfg)
    for candidate in sorted(own.parent.glob(prefix + "*")):
        if candidate != own and is_finished(candidate):
            stored = read_config(candidate)
            if trajectory_identity(stored) == wanted and probes_cover(stored, cfg):
                return candidate
    return own


def read_metrics(directory: Path) -> pd.DataFrame:
    return pd.read_parquet(Path(directory) / "metrics.parquet")


def read_config(directory: Path) -> DictConfig:
    return OmegaConf.load(Path(directory) / "config.yaml")


def split_metric(names: pd.Series) -> pd.DataFrame:
    """Split tagged metric names: 'grad_diff@0.5' -> base grad_diff, multiplier 0.5;
    'act_q0.25#u3' -> base act_q0.25, unit 3."""
    parts = names.astype(str).str.extract(r"^(?P<base>[^@#]+)(?:@(?P<multiplier>[^#]+))?(?:#u(?P<unit>\d+))?$")
    parts["multiplier"] = parts["multiplier"].astype(float)
    parts["unit"] = parts["unit"].astype(float)
    return parts
