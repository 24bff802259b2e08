"""The one training loop: a Trainer trains one run, or several DLN runs stacked into one model
(bnlab.training.stacking builds their data and model; everything else is this loop)."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from bnlab.config import cuda_settings, identity, run_key
from bnlab.data.datasets import build_data
from bnlab.models import build_model
from bnlab.store import checkpoint
from bnlab.store.runs import write_metrics, write_summary
from bnlab.training.probe_schedule import ProbeSchedule
from bnlab.training.rows import MetricRows
from bnlab.training.stacking import build_stack
from bnlab.training.summary import run_summary
from bnlab.training.tracking import WandbRun
from bnlab.util.devices import resolve_device
from bnlab.util.process import StopSignals
from bnlab.util.rng import rng_state, set_rng_state

# cuBLAS reads this when it creates its first handle, which may be before a deterministic run's Trainer
# exists (a pool worker that trained another run): set for the process, it makes cuBLAS deterministic.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

log = logging.getLogger("bnlab")


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
    rng: tuple | None = None  # a stacked run's own generator states (training draws nothing from them)

    def __post_init__(self):
        self.key = run_key(self.cfg)


class Trainer:
    """Trains the run `cfgs` (a config) in `directories` (its directory), or the runs `cfgs` (a list of
    configs with one bnlab.training.stacking.stack_key) in `directories` as one stacked model."""

    def __init__(self, cfgs: DictConfig | list[DictConfig], directories: Path | list[Path]):
        if isinstance(cfgs, DictConfig):
            cfgs, directories = [cfgs], [directories]
        self.members = [Member(c, Path(d)) for c, d in zip(cfgs, directories, strict=True)]
        cfg = self.cfg = cfgs[0]
        self.directory, self.key = self.members[0].directory, self.members[0].key
        self.stacked = len(cfgs) > 1
        if cfg.runtime.threads:
            torch.set_num_threads(cfg.runtime.threads)
        self.device = resolve_device(cfg.runtime.device)
        self.dtype = getattr(torch, cfg.train.dtype)
        if self.device.type == "cuda":
            cuda = cuda_settings(cfg)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cuda["tf32"]
            torch.backends.cudnn.benchmark = cuda["cudnn_benchmark"]
            # warn_only: an op without a deterministic CUDA kernel warns (naming itself) instead of failing a run
            torch.use_deterministic_algorithms(cuda["deterministic"], warn_only=True)
        if self.stacked:
            self.data, self.model, states = build_stack(cfgs, self.device, self.dtype)
            for m, state in zip(self.members, states, strict=True):
                m.rng = state
        else:
            torch.manual_seed(cfg.seed)
            self.data = build_data(cfg, self.device, self.dtype)
            self.model = build_model(cfg).to(self.device, self.dtype)
        # auto: on for the conv net, on either device. On a 2-core CPU a smoke VGG run trains 1.26x (none) to
        # 1.45x (BatchNorm) faster in channels-last (docs/speed.md); its tensor-core convolutions want it on CUDA.
        self.channels_last = self.data.classification and cfg.runtime.channels_last in (True, "auto")
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.probes = ProbeSchedule(cfg, self.model, self.data.loss, cfg.optim.lr, seeds=[c.seed for c in cfgs])
        for probe, why in self.probes.not_applicable.items():
            log.info("probes.%s is enabled but measures nothing here: %s", probe, why)
        self.step_model = self._compiled() if cfg.runtime.compile else self.model
        # foreach: one multi-tensor update instead of a Python loop over ~70 parameters (torch's default
        # on CPU); the arithmetic, and so the trajectory, is the same.
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                         weight_decay=cfg.optim.weight_decay, foreach=True)

    @property
    def rows(self) -> MetricRows:
        return self.members[0].rows

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
        if not self.stacked:
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
        """Train from the newest checkpoint (or step 0) to the end, checkpointing on the way and when told
        to stop; save every run's metrics and summary. Returns the (first) run's directory."""
        cfg, steps = self.cfg, self.cfg.train.steps
        for m in self.members:
            m.wandb = WandbRun(m.cfg, m.directory, m.key, identity(m.cfg))
        label = self.key if not self.stacked else f"{len(self.members)} stacked runs ({self.key}, ...)"
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
                        self._pause(stop, label, completed)
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

    def _pause(self, stop: StopSignals, label: str, step: int) -> None:
        """Told to stop, and checkpointed at `step`: pass the signal on (which may end the process), and if
        the handler lets the run go on (submitit ignores SIGTERM), reopen the wandb runs and continue."""
        log.warning("%s: signal %s at step %d; checkpointed there", label,
                    ", ".join(sorted({signal.Signals(s).name for s in stop.pending})), step)
        for m in self._active():
            m.wandb.interrupt()
        stop.forward()
        for m in self._active():
            m.wandb = WandbRun(m.cfg, m.directory, m.key, identity(m.cfg))

    def _active(self) -> list[Member]:
        return [m for m in self.members if m.active]

    def _flush_all(self, bar, elapsed: float) -> bool:
        """Flush every active run's metrics; a run whose loss became non-finite is saved as diverged and
        stops (alone, the loop ends; stacked, the others go on). True when no run is left."""
        for m in self._active():
            m.diverged_at = first_nonfinite_loss(self._flush(m, bar))
            if m.diverged_at is not None:
                log.warning("%s: non-finite loss at step %d; stopping the run as diverged", m.key, m.diverged_at)
                self._save(m, "diverged", elapsed)
                checkpoint.clear(m.directory)
                m.active = False
        return not self._active()

    def _flush(self, m: Member, bar) -> list[tuple[int, str, int, float]]:
        """Convert a run's pending metrics, log them to wandb and show the last loss; return them."""
        flushed = m.rows.flush()
        by_step: dict[int, dict[str, float]] = {}
        stride = m.cfg.logger.wandb.every_n_steps
        for step, metric, layer, value in flushed:
            if metric not in ("loss", "accuracy") or step % stride == 0 or metric.startswith("eval_"):
                by_step.setdefault(step, {})[metric if layer == 0 else f"{metric}/layer{layer}"] = value
        m.wandb.log(by_step)
        losses = [value for _, metric, _, value in flushed if metric == "loss"]
        if losses and m is self.members[0]:
            bar.set_postfix(loss=f"{losses[-1]:.4g}", refresh=False)
        return flushed

    def _resume(self) -> int:
        """Restore each run's newest checkpoint, if any: the step to continue from (0 when starting afresh).
        Stacked runs must resume from one step (bnlab.training.runner.run_stacked groups them so)."""
        steps = set()
        for i, m in enumerate(self.members):
            found = checkpoint.load(m.directory, identity(m.cfg), self.device.type)
            if found is None:
                steps.add(0)
                continue
            state, m.rows.columns = found
            rng = (state["cpu_rng"], state["cuda_rng"])
            if self.stacked:  # plain SGD keeps no optimizer state
                self.model.load_member_state_dict(i, state["model"])
                m.rng = rng
            else:
                self.model.load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
                set_rng_state(rng, self.device)
            self.probes.direction_rngs[i].set_state(state["direction_rng"])
            m.wall_before, m.resumed_from = state["wall_s"], state["step"]
            m.persisted_rows = len(m.rows.columns["step"])
            steps.add(state["step"])
        if len(steps) > 1:
            raise RuntimeError(f"stacked runs resume from different steps {sorted(steps)}; "
                               "bnlab.training.runner.run_stacked trains them as one stack per step")
        return steps.pop()

    def _checkpoint(self, step: int, elapsed: float) -> None:
        """Everything needed to continue at `step` exactly as if never stopped (the data order is a function
        of the seed and the step). A stacked run's checkpoint is the one it would write alone."""
        for i, m in enumerate(self.members):
            if not m.active:
                continue
            model = self.model.member_state_dict(i) if self.stacked else self.model.state_dict()
            rng = m.rng if self.stacked else rng_state(self.device)
            state = {
                "step": step,
                "identity": json.dumps(identity(m.cfg), sort_keys=True),
                "model": model,
                "optimizer": self.optimizer.state_dict(),
                "cpu_rng": rng[0],
                "cuda_rng": rng[1],
                "direction_rng": self.probes.direction_rngs[i].get_state(),
                "wall_s": m.wall_before + elapsed,
                "device_type": self.device.type,  # a resume on another kind of device is refused
            }
            m.persisted_rows = checkpoint.save(m.directory, state, m.rows.columns, m.persisted_rows)

    def _save(self, m: Member, status: str, elapsed: float, error: str | None = None):
        wall = m.wall_before + elapsed
        write_metrics(m.directory, m.rows.columns)
        summary = run_summary(m.cfg, m.key, m.rows.columns, status, wall, self.device,
                              getattr(self.data, "description", m.cfg.data.name), m.diverged_at, m.resumed_from,
                              len(self.members))
        if self.probes.not_applicable:
            summary["probes_not_applicable"] = self.probes.not_applicable
        if error:
            summary["error"] = error
        write_summary(m.directory, summary)
        m.wandb.finish(summary)
        log.info("%s: %s after %d steps in %.1f s -> %s", m.key, status, summary["steps_completed"], wall, m.directory)


def first_nonfinite_loss(flushed: list[tuple[int, str, int, float]]) -> int | None:
    """The first step among flushed rows whose loss is not finite (the run diverged there), if any."""
    return next((step for step, metric, _, value in flushed if metric == "loss" and not math.isfinite(value)), None)
