"""The one training loop, and the `bnlab-train` entry point.

    bnlab-train model=dln norm=l1 optim.lr=1e-6 seed=2        # one run
    bnlab-train -m experiment=lp-landscape-dln scale=smoke    # the sweep behind one figure
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from tqdm import tqdm

import bnlab
from bnlab import checkpoint, runlock, store
from bnlab.config import CONFIG_DIR, ConfigError, identity, resolved, run_key, validate
from bnlab.data import build_data
from bnlab.jobcontrol import StopSignals, slurm_job, train_together
from bnlab.metrics import MetricRows
from bnlab.models import build_model
from bnlab.probe_schedule import ProbeSchedule
from bnlab.tracking import WandbRun

log = logging.getLogger("bnlab")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.machine()}, {os.cpu_count()} cores)"


def git_commit() -> str:
    try:
        command = ["git", "describe", "--always", "--dirty", "--abbrev=40"]
        out = subprocess.run(command, cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run(cfg: DictConfig) -> Path:
    """Train the run `cfg` describes, or reuse it if the store already holds it finished.

    Returns the run's directory. A diverging run (non-finite loss) is stopped, marked `diverged` and
    returned like a finished one; other failures write what was measured so far, then raise.
    """
    cfg = resolved(cfg)
    validate(cfg)
    directory = store.find_run(cfg)
    if store.is_finished(directory):
        return _reuse(directory)
    with runlock.hold(directory):
        directory = store.find_run(cfg)  # whoever held the lock may have finished it meanwhile
        if store.is_finished(directory):
            return _reuse(directory)
        store.write_config(directory, cfg)
        return Trainer(cfg, directory).fit()


def _reuse(directory: Path) -> Path:
    log.info("reusing %s (%s)", directory, store.read_summary(directory)["status"])
    return directory


class Trainer:
    def __init__(self, cfg: DictConfig, directory: Path):
        self.cfg, self.directory = cfg, directory
        self.key = run_key(cfg)
        if cfg.runtime.threads:
            torch.set_num_threads(cfg.runtime.threads)
        self.device = resolve_device(cfg.runtime.device)
        dtype = getattr(torch, cfg.train.dtype)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.runtime.tf32
        torch.manual_seed(cfg.seed)
        self.data = build_data(cfg, self.device, dtype)
        self.model = build_model(cfg).to(self.device, dtype)
        self.channels_last = self.data.classification and (
            cfg.runtime.channels_last is True or (cfg.runtime.channels_last == "auto" and self.device.type == "cuda"))
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.step_model = self._compiled() if cfg.runtime.compile else self.model
        # foreach: one multi-tensor update instead of a Python loop over ~70 parameters (torch's default
        # on CPU); the arithmetic, and so the trajectory, is the same.
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                         weight_decay=cfg.optim.weight_decay, foreach=True)
        self.probes = ProbeSchedule(cfg, self.model, self.data.loss, cfg.optim.lr)
        self.rows = MetricRows()

    def _compiled(self):
        """The model compiled for the training step. Inductor's own random numbers differ from eager ones;
        falling back to eager's keeps a noisy layer's draws identical to what the probes replay."""
        import torch._inductor.config

        torch._inductor.config.fallback_random = True
        return torch.compile(self.model)

    def evaluate(self, step: int) -> None:
        """Evaluation-mode loss and accuracy on the data's fixed evaluation sets (running statistics, no
        noise). Draws no random numbers and changes nothing, so the run's trajectory is unaffected."""
        self.model.eval()
        size = self.cfg.data.eval.batch_size
        with torch.no_grad():
            for split, (x, y) in self.data.eval_sets.items():
                loss_sum, correct = 0.0, 0
                for i in range(0, len(y), size):
                    outputs = self.model(x[i:i + size])
                    loss_sum = loss_sum + self.data.loss(outputs, y[i:i + size]).double() * len(y[i:i + size])
                    correct = correct + (outputs.argmax(1) == y[i:i + size]).sum()
                self.rows.add(step, f"eval_{split}_loss", 0, loss_sum / len(y))
                self.rows.add(step, f"eval_{split}_accuracy", 0, correct.double() * 100 / len(y))
        self.model.train()

    def _evaluating(self, step: int) -> bool:
        if not self.data.classification:
            return False
        return step % self.cfg.data.eval.every == 0 or step == self.cfg.train.steps

    def step(self, step: int) -> None:
        if self._evaluating(step):
            self.evaluate(step)
        x, y = self.data.train_batch(step)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        probing = self.probes.due(step)
        if probing:
            self.probes.before_step(step, x, y, self.rows)
        self.optimizer.zero_grad(set_to_none=True)
        outputs = self.step_model(x)
        loss = self.data.loss(outputs, y)
        loss.backward()
        self.optimizer.step()
        self.rows.add(step, "loss", 0, loss.detach())
        if self.data.classification:
            self.rows.add(step, "accuracy", 0, (outputs.argmax(1) == y).double().mean() * 100)
        if probing:
            self.probes.after_step(step, x, y, self.rows)

    def fit(self) -> Path:
        cfg, steps = self.cfg, self.cfg.train.steps
        wandb = WandbRun(cfg, self.directory, self.key, identity(cfg))
        bar = tqdm(total=steps, desc=self.key, disable=not (cfg.runtime.progress and sys.stderr.isatty()), unit="step",
                   mininterval=1.0)
        started, status, diverged_at = time.perf_counter(), "finished", None
        done = self.resumed_from = self._resume()
        bar.update(done)
        every = cfg.runtime.checkpoint_every
        with StopSignals() as stop:
            try:
                for step in range(done, steps):
                    self.step(step)
                    completed = step + 1
                    if completed == steps and self._evaluating(steps):
                        self.evaluate(steps)  # the trained model
                    stopping = bool(stop.pending) and completed < steps
                    checkpoint_due = (every and completed % every == 0 and completed < steps) or stopping
                    if completed % cfg.runtime.log_every == 0 or completed == steps or checkpoint_due:
                        diverged_at = self._flush(wandb, bar, completed - done)
                        done = completed
                        if diverged_at is not None:
                            status = "diverged"
                            log.warning("%s: non-finite loss at step %d; stopping the run as diverged", self.key,
                                        diverged_at)
                            break
                    if checkpoint_due:
                        self._checkpoint(completed, self.wall_before + time.perf_counter() - started)
                    if stopping:
                        log.warning("%s: signal %s at step %d; checkpointed there", self.key,
                                    ", ".join(sorted({signal.Signals(s).name for s in stop.pending})), completed)
                        wandb.interrupt()
                        stop.forward()  # returns when the handler lets the run go on (submitit ignores SIGTERM)
                        wandb = WandbRun(cfg, self.directory, self.key, identity(cfg))
            except BaseException as exc:
                self._flush(wandb, bar, 0)
                interrupted = isinstance(exc, (SystemExit, KeyboardInterrupt))
                self._save("interrupted" if interrupted else "failed",
                           self.wall_before + time.perf_counter() - started, diverged_at, wandb, error=repr(exc))
                raise  # the checkpoints stay: started again, the run resumes from the last one
            finally:
                bar.close()
            self._save(status, self.wall_before + time.perf_counter() - started, diverged_at, wandb)
            checkpoint.clear(self.directory)  # metrics.parquet now holds everything
            stop.forward()  # a signal during the last steps: the run is complete, now do what was asked
        return self.directory

    def _resume(self) -> int:
        """Restore the newest checkpoint, if any: the step to continue from (0 when starting afresh)."""
        self.wall_before, self.persisted_rows = 0.0, 0
        found = checkpoint.load(self.directory, identity(self.cfg))
        if found is None:
            return 0
        state, self.rows.columns = found
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.random.set_rng_state(state["cpu_rng"])
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.probes.direction_rng.set_state(state["direction_rng"])
        self.wall_before, self.persisted_rows = state["wall_s"], len(self.rows.columns["step"])
        return state["step"]

    def _checkpoint(self, step: int, wall: float) -> None:
        """Everything needed to continue at `step` exactly as if never stopped (the data order is a function
        of the seed and the step)."""
        state = {
            "step": step,
            "identity": json.dumps(identity(self.cfg), sort_keys=True),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "cpu_rng": torch.random.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "direction_rng": self.probes.direction_rng.get_state(),
            "wall_s": wall,
        }
        self.persisted_rows = checkpoint.save(self.directory, state, self.rows.columns, self.persisted_rows)

    def _flush(self, wandb: WandbRun, bar, advanced: int) -> int | None:
        """Convert pending metrics; return the first step with a non-finite loss, if any."""
        flushed = self.rows.flush()
        by_step: dict[int, dict[str, float]] = {}
        diverged_at, last_loss = None, None
        stride = self.cfg.logger.wandb.every_n_steps
        for step, metric, layer, value in flushed:
            if metric not in ("loss", "accuracy") or step % stride == 0 or metric.startswith("eval_"):
                by_step.setdefault(step, {})[metric if layer == 0 else f"{metric}/layer{layer}"] = value
            if metric == "loss":
                last_loss = value
                if diverged_at is None and not math.isfinite(value):
                    diverged_at = step
        wandb.log(by_step)
        bar.update(advanced)
        if last_loss is not None:
            bar.set_postfix(loss=f"{last_loss:.4g}", refresh=False)
        return diverged_at

    def _final_evaluation(self) -> dict:
        """The last evaluation's metrics (final_eval_test_accuracy, ...) when the run evaluates at all."""
        last = {}
        for step, metric, value in zip(self.rows.columns["step"], self.rows.columns["metric"],
                                       self.rows.columns["value"], strict=True):
            if metric.startswith("eval_"):
                last[metric] = (step, value)
        return {f"final_{metric}": value for metric, (_, value) in last.items()} | (
            {"final_eval_step": max(step for step, _ in last.values())} if last else {})

    def _save(self, status: str, wall: float, diverged_at: int | None, wandb: WandbRun, error: str | None = None):
        store.write_metrics(self.directory, self.rows.columns)
        losses = [v for m, v in zip(self.rows.columns["metric"], self.rows.columns["value"], strict=True)
                  if m == "loss"]
        finite = [v for v in losses if math.isfinite(v)]
        summary = {
            "status": status,
            "key": self.key,
            "steps_completed": len(losses),
            "steps": self.cfg.train.steps,
            "diverged_at_step": diverged_at,
            "resumed_from_step": self.resumed_from,
            "final_loss": losses[-1] if losses and status == "finished" else None,
            "min_loss": min(finite) if finite else None,
            **self._final_evaluation(),
            "wall_time_s": round(wall, 3),
            "steps_per_s": round(len(losses) / wall, 2) if wall > 0 else None,
            "device": describe_device(self.device),
            "data": getattr(self.data, "description", self.cfg.data.name),
            "torch": torch.__version__,
            "bnlab": bnlab.__version__,
            "git_commit": git_commit(),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "slurm": slurm_job(),
        }
        if error:
            summary["error"] = error
        store.write_summary(self.directory, summary)
        wandb.finish(summary)
        log.info("%s: %s after %d steps in %.1f s -> %s", self.key, status, len(losses), wall, self.directory)


def listed_runs(cfg: DictConfig) -> list[dict]:
    """Entry `runtime.run_index` of the run list `runtime.run_list`: a JSON list of groups of full run
    configs. `bnlab-figure --launcher slurm` writes one and sweeps run_index, so that exactly the runs a
    figure still needs, however they were composed, become the tasks of one job array, `--pack` runs each."""
    path, index = Path(cfg.runtime.run_list), cfg.runtime.run_index
    try:
        groups = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError("runtime.run_list", str(path),
                          f"a run list written by bnlab-figure --launcher slurm (this one: {exc})") from exc
    if not isinstance(index, int) or not 0 <= index < len(groups):
        raise ConfigError("runtime.run_index", index, f"0 to {len(groups) - 1}: {path} lists {len(groups)} groups")
    return groups[index]


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from bnlab.cifar10 import DataError

    try:
        if cfg.runtime.get("run_list"):
            train_together(listed_runs(cfg))
        else:
            run(cfg)
    except (ConfigError, DataError) as exc:  # the message says what is wrong and how to fix it
        print(f"bnlab-train: {exc}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
