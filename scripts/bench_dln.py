"""The DLN items of `make bench` (scripts/bench.py): bnlab's training loop against the straightforward one.

- per-step time of a BatchNorm DLN step: a plain eager nn.Module loop (BatchNorm written out as mean /
  var / normalize, torch.optim.SGD) vs bnlab's loop without probes; interleaved repetitions, medians;
- one paper-scale BatchNorm DLN run (10k full-batch steps) with ICS, landscape, activation and sigma
  probes every 50 steps, end to end through bnlab.training.runner.run (target: under 60 s on a 2-core CPU);
- 8 seeds of that run: one after another through bnlab.training.runner.run, against trained together as one
  stacked model through bnlab.training.runner.run_stacked (target: >= 4x).
"""

import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bnlab import store
from bnlab.config import compose
from bnlab.training.loop import Trainer
from bnlab.training.runner import run, run_stacked

REPEATS, STEPS = 5, 200


class PlainBatchNorm(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(width)), nn.Parameter(torch.zeros(width))

    def forward(self, x):
        mean, var = x.mean(0), x.var(0, unbiased=False)
        return (x - mean) / torch.sqrt(var + 1e-5) * self.weight + self.bias


def plain_model():
    layers = []
    for i in range(25):
        layers.append(nn.Linear(10, 10, bias=False))
        if i < 24:
            layers.append(PlainBatchNorm(10))
    return nn.Sequential(*layers)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def time_steps(step) -> float:
    step()
    started = time.perf_counter()
    for _ in range(STEPS):
        step()
    return (time.perf_counter() - started) / STEPS


def step_comparison(repeats: int = REPEATS) -> dict:
    """Milliseconds per BatchNorm DLN step: a plain eager loop vs bnlab's loop without probes."""
    x, a = torch.randn(1000, 10), torch.randn(10, 10)
    y = x @ a.T
    model = plain_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)

    def plain_step():
        optimizer.zero_grad()
        loss = ((model(x) - y) ** 2).sum() / 2
        loss.backward()
        optimizer.step()

    with tempfile.TemporaryDirectory() as tmp:
        common = ["norm=batch", "logger=none", "runtime.progress=false", f"runtime.runs_dir={tmp}"]
        trainer = Trainer(compose([*common, "probes=none"]), Path(tmp) / "bench")
        counter = iter(range(10**9))

        def bnlab_step():
            trainer.step(next(counter))

        plain, ours = [], []
        for _ in range(repeats):  # interleaved, so both see the same machine load
            plain.append(time_steps(plain_step))
            ours.append(time_steps(bnlab_step))
    plain_ms, ours_ms = statistics.median(plain) * 1e3, statistics.median(ours) * 1e3
    return {"plain_eager_loop": round(plain_ms, 3), "bnlab": round(ours_ms, 3),
            "ratio_bnlab_over_plain": round(ours_ms / plain_ms, 3)}


def paper_run_seconds() -> float:
    """One paper-scale BatchNorm DLN run with every probe every 50 steps, end to end through
    bnlab.training.runner.run."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run(compose(["norm=batch", "logger=none", "runtime.progress=false", f"runtime.runs_dir={tmp}"]))
        return round(time.perf_counter() - started, 1)


def seeds_together(seeds: int = 8) -> dict:
    """8 seeds of the paper-scale BatchNorm DLN run with every probe, end to end, in seconds: one after
    another (1 torch thread, the fastest a single run gets: with 2 it is slower) against stacked, with 1
    and 2 threads and with 2 threads plus torch.compile (compilation included). Also the largest relative
    difference between a run's final loss stacked and alone (float32, 10k steps)."""
    common = ["norm=batch", "logger=none", "runtime.progress=false"]

    def seconds(train, extra):
        with tempfile.TemporaryDirectory() as tmp:
            cfgs = [compose([*common, *extra, f"seed={seed}", f"runtime.runs_dir={tmp}"]) for seed in range(seeds)]
            started = time.perf_counter()
            directories = train(cfgs)
            elapsed = time.perf_counter() - started
            return elapsed, [store.read_summary(d)["final_loss"] for d in directories]

    alone_s, alone_loss = seconds(lambda cfgs: [run(c) for c in cfgs], ["runtime.threads=1"])
    result = {"seeds": seeds, "one_after_another_s": round(alone_s, 1)}
    variants = {"stacked_1_thread": ["runtime.threads=1"], "stacked_2_threads": ["runtime.threads=2"],
                "stacked_2_threads_compiled": ["runtime.threads=2", "runtime.compile=true"]}
    worst = 0.0
    for name, extra in variants.items():
        stacked_s, stacked_loss = seconds(run_stacked, extra)
        result[f"{name}_s"] = round(stacked_s, 1)
        result[f"speedup_{name}"] = round(alone_s / stacked_s, 2)
        worst = max(worst, *(abs(a - b) / abs(a) for a, b in zip(alone_loss, stacked_loss, strict=True)))
    result["max_relative_difference_final_loss"] = float(f"{worst:.3g}")
    result["target"] = ">= 4x"
    return result
