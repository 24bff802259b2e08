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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import bnlab
from bnlab import checkpoint, runlock, store
from bnlab.config import CONFIG_DIR, ConfigError, dry_run, identity, resolved, run_key, validate
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


@dataclass
class Member:
    """One run of those a Trainer trains (one, or several stacked): where it lives and what it has logged."""

    cfg: DictConfig
    directory: Path
    key: str = field(init=False)  # run_key(cfg)
    rows: MetricRows = field(default_factory=MetricRows)
    wall_before: float = 0.0  # wall time of the run before the checkpoint it resumed from
    persisted_rows: int = 0  # rows already in checkpoint segments
    resumed_from: int = 0
    diverged_at: int | None = None
    active: bool = True  # false once a stacked run has diverged and been saved (the others go on)
    cpu_rng: torch.Tensor | None = None  # a stacked run's own generator states (training draws nothing)
    cuda_rng: torch.Tensor | None = None

    def __post_init__(self):
        self.key = run_key(self.cfg)


class Trainer:
    """Trains one run (`cfg`, `directory`); bnlab.stack.StackedTrainer, a subclass, trains several DLN runs
    that differ only in their seed as one stacked model, through this same loop."""

    def __init__(self, cfg: DictConfig, directory: Path):
        self.cfg, self.directory = cfg, directory
        self.members = [Member(cfg, directory)]
        self.key = self.members[0].key
        self._set_up_runtime(cfg)
        torch.manual_seed(cfg.seed)
        self.data = build_data(cfg, self.device, self.dtype)
        self.model = build_model(cfg).to(self.device, self.dtype)
        self.channels_last = self.data.classification and (
            cfg.runtime.channels_last is True or (cfg.runtime.channels_last == "auto" and self.device.type == "cuda"))
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._finish_setup(ProbeSchedule(cfg, self.model, self.data.loss, cfg.optim.lr))

    @property
    def rows(self) -> MetricRows:
        return self.members[0].rows

    def _set_up_runtime(self, cfg) -> None:
        if cfg.runtime.threads:
            torch.set_num_threads(cfg.runtime.threads)
        self.device = resolve_device(cfg.runtime.device)
        self.dtype = getattr(torch, cfg.train.dtype)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.runtime.tf32
            torch.backends.cudnn.benchmark = cfg.runtime.cudnn_benchmark

    def _finish_setup(self, probe_schedule: ProbeSchedule) -> None:
        cfg = self.cfg
        self.step_model = self._compiled() if cfg.runtime.compile else self.model
        # foreach: one multi-tensor update instead of a Python loop over ~70 parameters (torch's default
        # on CPU); the arithmetic, and so the trajectory, is the same.
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                         weight_decay=cfg.optim.weight_decay, foreach=True)
        self.probes = probe_schedule

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
        rows = [m.rows for m in self.members]
        if probing:
            self.probes.before_step(step, x, y, rows)
        self.optimizer.zero_grad(set_to_none=True)
        outputs = self.step_model(x)
        loss = self.data.loss(outputs, y)
        loss.sum().backward()  # a stacked model's losses, one per run: each run gets its own gradient
        self.optimizer.step()
        if len(self.members) == 1:
            self.rows.add(step, "loss", 0, loss.detach())
        else:
            for member, run_loss in zip(self.members, loss.detach().unbind(0), strict=True):
                if member.active:
                    member.rows.add(step, "loss", 0, run_loss)
        if self.data.classification:
            self.rows.add(step, "accuracy", 0, (outputs.argmax(1) == y).double().mean() * 100)
        if probing:
            self.probes.after_step(step, x, y, rows)

    def fit(self) -> Path:
        cfg, steps = self.cfg, self.cfg.train.steps
        members = self.members
        for m in members:
            m.wandb = WandbRun(m.cfg, m.directory, m.key, identity(m.cfg))
        label = self.key if len(members) == 1 else f"{len(members)} stacked runs ({self.key}, ...)"
        bar = tqdm(total=steps, desc=label, disable=not (cfg.runtime.progress and sys.stderr.isatty()), unit="step",
                   mininterval=1.0)
        started = time.perf_counter()
        done = self._resume()
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
                        bar.update(completed - done)
                        done = completed
                        if self._flush_all(bar, time.perf_counter() - started):
                            break  # every run has diverged
                    if checkpoint_due:
                        self._checkpoint(completed, time.perf_counter() - started)
                    if stopping:
                        log.warning("%s: signal %s at step %d; checkpointed there", label,
                                    ", ".join(sorted({signal.Signals(s).name for s in stop.pending})), completed)
                        for m in self._active():
                            m.wandb.interrupt()
                        stop.forward()  # returns when the handler lets the run go on (submitit ignores SIGTERM)
                        for m in self._active():
                            m.wandb = WandbRun(m.cfg, m.directory, m.key, identity(m.cfg))
            except BaseException as exc:
                interrupted = isinstance(exc, (SystemExit, KeyboardInterrupt))
                for m in self._active():
                    self._flush(m, bar)
                    self._save(m, "interrupted" if interrupted else "failed", time.perf_counter() - started,
                               error=repr(exc))
                raise  # the checkpoints stay: started again, the run resumes from the last one
            finally:
                bar.close()
            for m in self._active():
                self._save(m, "finished", time.perf_counter() - started)
                checkpoint.clear(m.directory)  # metrics.parquet now holds everything
            stop.forward()  # a signal during the last steps: the run is complete, now do what was asked
        return self.directory

    def _active(self) -> list[Member]:
        return [m for m in self.members if m.active]

    def _flush_all(self, bar, elapsed: float) -> bool:
        """Flush every active run's metrics; a run whose loss became non-finite is saved as diverged and
        stops (alone, the loop ends; stacked, the others go on). True when no run is left."""
        for m in self._active():
            m.diverged_at = self._flush(m, bar)
            if m.diverged_at is not None:
                log.warning("%s: non-finite loss at step %d; stopping the run as diverged", m.key, m.diverged_at)
                self._save(m, "diverged", elapsed)
                checkpoint.clear(m.directory)
                m.active = False
        return not self._active()

    def _resume(self) -> int:
        """Restore the newest checkpoint, if any: the step to continue from (0 when starting afresh)."""
        m = self.members[0]
        found = checkpoint.load(m.directory, identity(m.cfg))
        if found is None:
            return 0
        state, m.rows.columns = found
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.random.set_rng_state(state["cpu_rng"])
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.probes.direction_rngs[0].set_state(state["direction_rng"])
        self._restore_bookkeeping(m, state)
        return state["step"]

    @staticmethod
    def _restore_bookkeeping(m: Member, state: dict) -> None:
        m.wall_before, m.persisted_rows, m.resumed_from = state["wall_s"], len(m.rows.columns["step"]), state["step"]

    def _checkpoint(self, step: int, elapsed: float) -> None:
        """Everything needed to continue at `step` exactly as if never stopped (the data order is a function
        of the seed and the step)."""
        for i, m in enumerate(self.members):
            if not m.active:
                continue
            state = {
                "step": step,
                "identity": json.dumps(identity(m.cfg), sort_keys=True),
                **self._member_state(i),
                "direction_rng": self.probes.direction_rngs[i].get_state(),
                "wall_s": m.wall_before + elapsed,
            }
            m.persisted_rows = checkpoint.save(m.directory, state, m.rows.columns, m.persisted_rows)

    def _member_state(self, i: int) -> dict:
        """Model, optimizer and generator states of run i (here the only one)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "cpu_rng": torch.random.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }

    def _flush(self, m: Member, bar) -> int | None:
        """Convert a run's pending metrics; return the first step with a non-finite loss, if any."""
        flushed = m.rows.flush()
        by_step: dict[int, dict[str, float]] = {}
        diverged_at, last_loss = None, None
        stride = m.cfg.logger.wandb.every_n_steps
        for step, metric, layer, value in flushed:
            if metric not in ("loss", "accuracy") or step % stride == 0 or metric.startswith("eval_"):
                by_step.setdefault(step, {})[metric if layer == 0 else f"{metric}/layer{layer}"] = value
            if metric == "loss":
                last_loss = value
                if diverged_at is None and not math.isfinite(value):
                    diverged_at = step
        m.wandb.log(by_step)
        if last_loss is not None and m is self.members[0]:
            bar.set_postfix(loss=f"{last_loss:.4g}", refresh=False)
        return diverged_at

    @staticmethod
    def _final_evaluation(m: Member) -> dict:
        """The last evaluation's metrics (final_eval_test_accuracy, ...) when the run evaluates at all."""
        last = {}
        for step, metric, value in zip(m.rows.columns["step"], m.rows.columns["metric"],
                                       m.rows.columns["value"], strict=True):
            if metric.startswith("eval_"):
                last[metric] = (step, value)
        return {f"final_{metric}": value for metric, (_, value) in last.items()} | (
            {"final_eval_step": max(step for step, _ in last.values())} if last else {})

    def _save(self, m: Member, status: str, elapsed: float, error: str | None = None):
        wall = m.wall_before + elapsed
        store.write_metrics(m.directory, m.rows.columns)
        losses = [v for metric, v in zip(m.rows.columns["metric"], m.rows.columns["value"], strict=True)
                  if metric == "loss"]
        finite = [v for v in losses if math.isfinite(v)]
        summary = {
            "status": status,
            "key": m.key,
            "steps_completed": len(losses),
            "steps": m.cfg.train.steps,
            "diverged_at_step": m.diverged_at,
            "resumed_from_step": m.resumed_from,
            "final_loss": losses[-1] if losses and status == "finished" else None,
            "min_loss": min(finite) if finite else None,
            **self._final_evaluation(m),
            "wall_time_s": round(wall, 3),
            "steps_per_s": round(len(losses) / wall, 2) if wall > 0 else None,
            "device": describe_device(self.device),
            "data": getattr(self.data, "description", m.cfg.data.name),
            "torch": torch.__version__,
            "bnlab": bnlab.__version__,
            "git_commit": git_commit(),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "slurm": slurm_job(),
            **({"stacked_with": len(self.members)} if len(self.members) > 1 else {}),
        }
        if error:
            summary["error"] = error
        store.write_summary(m.directory, summary)
        m.wandb.finish(summary)
        log.info("%s: %s after %d steps in %.1f s -> %s", m.key, status, len(losses), wall, m.directory)


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
        if dry_run():
            _dry_run(cfg)
        elif cfg.runtime.get("run_list"):
            train_together(listed_runs(cfg))
        else:
            run(cfg)
    except (ConfigError, DataError) as exc:  # the message says what is wrong and how to fix it
        print(f"bnlab-train: {exc}", file=sys.stderr)
        sys.exit(2)


def _dry_run(cfg: DictConfig) -> None:
    """Check the run (config, data) and say where it would go, without training it."""
    from bnlab import cifar10

    configs = [OmegaConf.create(c) for c in listed_runs(cfg)] if cfg.runtime.get("run_list") else [resolved(cfg)]
    for c in configs:
        validate(c)
        data = f"; would {cifar10.check(c.data.root, c.data.source, c.data.download, c.data.sha256)}" \
            if c.data.name == "cifar10" else ""
        done = store.is_finished(store.find_run(c))
        print(f"dry run: {'finished already' if done else 'would train'} {store.run_dir(c)}{data}", flush=True)


def _without_launcher(argv: list[str]) -> list[str]:
    """For a dry run: check that the launcher's overrides compose, then drop them, so that Hydra's basic
    launcher runs each job of the sweep here (as a dry run) instead of submitting it."""
    from bnlab.config import compose

    launcher = [a for a in argv if a.startswith(("hydra/launcher=", "hydra.launcher."))]
    if launcher:
        try:
            compose(launcher, with_hydra=True)
        except Exception as exc:  # Hydra's composition errors name the bad group or key
            if not type(exc).__module__.startswith(("hydra", "omegaconf")):
                raise
            print(f"bnlab-train: {exc}", file=sys.stderr)
            sys.exit(2)
        print(f"dry run: the launcher ({' '.join(launcher)}) composes; its jobs are checked here instead",
              flush=True)
    return [a for a in argv if a not in launcher]


def main() -> None:
    if dry_run():
        sys.argv = [sys.argv[0], *_without_launcher(sys.argv[1:])]
    _hydra_main()


if __name__ == "__main__":
    main()
