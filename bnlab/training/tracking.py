"""Weights & Biases logging that never fails a run: if wandb cannot start or log, the run goes on with
its local files and says so once."""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)


class WandbRun:
    def __init__(self, cfg, directory: Path, key: str, identity: dict):
        self.run = None
        settings = cfg.logger.wandb
        mode = settings.mode or "offline"  # WANDB_MODE set but empty means the default
        if not settings.enabled or mode == "disabled":
            return
        try:
            import wandb

            self.run = wandb.init(
                project=settings.project, entity=settings.entity, group=settings.group, name=key,
                id=re.sub(r"[^A-Za-z0-9_-]", "_", key), dir=str(directory), mode=mode,
                config={**identity, "scale": cfg.scale.name, "experiment": cfg.experiment_name},
                # create_new: a stacked training has several runs open in one process
                resume="allow", reinit="create_new", settings=wandb.Settings(silent=True, console="off"),
            )
        except Exception as exc:  # noqa: BLE001 - any wandb failure must leave the run running
            log.warning("wandb unavailable (%s); continuing with local files only", exc)
            self.run = None

    def log(self, step_metrics: dict[int, dict[str, float]]) -> None:
        if self.run is None:
            return
        try:
            for step in sorted(step_metrics):
                self.run.log(step_metrics[step], step=step)
        except Exception as exc:  # noqa: BLE001
            log.warning("wandb logging failed (%s); continuing with local files only", exc)
            self.run = None

    def interrupt(self) -> None:
        """Close the run as preempted before the process is stopped (SLURM kills wandb's service process
        with the job); the resumed run continues it under the same id."""
        if self.run is None:
            return
        try:
            self.run.mark_preempting()
            self.run.finish(exit_code=1)
        except Exception as exc:  # noqa: BLE001
            log.warning("wandb finish failed (%s)", exc)
        self.run = None

    def finish(self, summary: dict) -> None:
        if self.run is None:
            return
        try:
            for key in ("status", "steps_completed", "final_loss", "wall_time_s"):
                if key in summary:
                    self.run.summary[key] = summary[key]
            self.run.finish()
        except Exception as exc:  # noqa: BLE001
            log.warning("wandb finish failed (%s)", exc)
