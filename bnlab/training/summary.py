"""A run's summary.json: how it ended, what it reached, and where and with what it ran."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import torch

import bnlab
from bnlab.store.provenance import git_commit
from bnlab.util.devices import describe_device
from bnlab.util.process import slurm_job


def final_evaluation(columns: dict[str, list]) -> dict:
    """The last evaluation's metrics (final_eval_test_accuracy, ...) when the run evaluates at all."""
    last = {}
    for step, metric, value in zip(columns["step"], columns["metric"], columns["value"], strict=True):
        if metric.startswith("eval_"):
            last[metric] = (step, value)
    return {f"final_{metric}": value for metric, (_, value) in last.items()} | (
        {"final_eval_step": max(step for step, _ in last.values())} if last else {})


def run_summary(cfg, key: str, columns: dict[str, list], status: str, wall: float, device: torch.device, data: str,
                diverged_at: int | None, resumed_from: int, stacked_with: int) -> dict:
    """The summary of run `key` (its config `cfg`, its metric columns) ending with `status` after `wall` seconds."""
    losses = [v for metric, v in zip(columns["metric"], columns["value"], strict=True) if metric == "loss"]
    finite = [v for v in losses if math.isfinite(v)]
    return {
        "status": status,
        "key": key,
        "steps_completed": len(losses),
        "steps": cfg.train.steps,
        "diverged_at_step": diverged_at,
        "resumed_from_step": resumed_from,
        "final_loss": losses[-1] if losses and status == "finished" else None,
        "min_loss": min(finite) if finite else None,
        **final_evaluation(columns),
        "wall_time_s": round(wall, 3),
        "steps_per_s": round(len(losses) / wall, 2) if wall > 0 else None,
        "device": describe_device(device),
        "data": data,
        "torch": torch.__version__,
        "bnlab": bnlab.__version__,
        "git_commit": git_commit(),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "slurm": slurm_job(),
        **({"stacked_with": stacked_with} if stacked_with > 1 else {}),
    }
