"""Activation distributions drawn like the paper's (figures 1c, 2, 6): one distribution per recorded step,
stacked over training, early steps at the back (top), late steps at the front (bottom).

The activation probe records quantiles of a sampled unit's values over the batch and spatial positions;
between two consecutive quantiles the density is their probability gap over their distance (the density
of the piecewise-linear CDF through the quantiles), drawn through the gaps' midpoints.
"""

import numpy as np
import pandas as pd

from bnlab import store


def quantile_table(run, layer: int, unit: int | None = None) -> tuple[pd.DataFrame, int]:
    """Probe steps x quantile level of one sampled unit of `layer` (the first sampled unit by default)."""
    m = run.metrics[(run.metrics.layer == layer) & (run.metrics.step % run.cfg.probes.every == 0)]
    tags = store.split_metric(m.metric)
    rows = tags.base.str.startswith("act_q").to_numpy()
    m, tags = m[rows], tags[rows]
    unit = int(tags.unit.min()) if unit is None else unit
    mine = (tags.unit == unit).to_numpy()
    table = m[mine].assign(q=tags.base[mine].str[len("act_q"):].astype(float).to_numpy()).pivot_table(
        index="step", columns="q", values="value")
    return table.sort_index(axis=1), unit


def density(levels: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, density) of the piecewise-linear CDF through (values, levels), closed to 0 at both ends."""
    width = np.diff(values)
    keep = width > 1e-12 * max(1.0, np.abs(values).max())
    mids = (values[:-1] + values[1:])[keep] / 2
    dens = np.diff(levels)[keep] / width[keep]
    return np.concatenate([[values[0]], mids, [values[-1]]]), np.concatenate([[0.0], dens, [0.0]])


def ridge(ax, run, layer: int, color, count: int = 12, overlap: float = 1.6) -> int:
    """Stacked distributions of one unit of `layer` at `count` evenly chosen probe steps; returns the unit."""
    table, unit = quantile_table(run, layer)
    pick = np.unique(np.linspace(0, len(table) - 1, min(count, len(table))).round().astype(int))
    levels = np.asarray(table.columns, dtype=float)
    for rank, i in enumerate(pick):
        x, d = density(levels, table.iloc[i].to_numpy())
        base = len(pick) - 1 - rank  # later steps lower and in front
        y = base + overlap * d / (d.max() or 1.0)  # each its own height: shapes, not densities, are compared
        ax.fill_between(x, base, y, color=color, alpha=0.35, linewidth=0, zorder=rank)
        ax.plot(x, y, color=color, lw=0.8, zorder=rank)
    ax.set_yticks(range(len(pick)))
    ax.set_yticklabels([str(s) for s in table.index[pick][::-1]], fontsize=7)
    ax.set_ylabel("Step"), ax.set_xlabel("Activation value")
    return unit
