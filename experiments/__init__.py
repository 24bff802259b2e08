"""Layer 8, the top: the paper's figures. One module per figure (SPEC section 4), named after its experiment
config (`configs/experiment/lp-training.yaml` -> `experiments/lp_training.py`): the runs it needs are that
config's sweep, and the module draws the figure (`draw(runs, path)`), judges the claims it checks
(`claims(runs)`) and says where it stands in the paper (`ORDER`). A module with `BEYOND = True` is left out of
`bnlab-figure all` (the paper's figures, within the first command's time) and drawn by `bnlab-figure beyond`.
Shared helpers are in `experiments.lib` (loading runs, plotting, claims, reports); `bnlab-figure` is
`experiments.cli`."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

# The configs beside this package (bnlab.config.CONFIG_DIR), named here so that importing the package stays
# light: `bnlab-figure --list` answers from a saved listing without importing torch (experiments.lib.entry).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def figure_module(name: str) -> ModuleType:
    """The module of figure `name` (the stem of its configs/experiment YAML)."""
    return importlib.import_module(f"experiments.{name.replace('-', '_')}")


def figure_names() -> list[str]:
    """Every figure, one per configs/experiment YAML, in the paper's order (each module's ORDER)."""
    names = [p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")]
    return sorted(names, key=lambda name: (figure_module(name).ORDER, name))


def figure_group(names: list[str], group: str) -> list[str]:
    """The figures `bnlab-figure all` draws (group "all": every figure but those BEYOND) or `beyond` does."""
    return [n for n in names if bool(getattr(figure_module(n), "BEYOND", False)) == (group == "beyond")]
