"""The DLN items of `make bench` (scripts/bench.py): bnlab's training loop against the straightforward one.

- per-step time of a BatchNorm DLN step: a plain eager nn.Module loop (BatchNorm written out as mean /
  var / normalize, torch.optim.SGD) vs bnlab's loop without probes; interleaved repetitions, medians;
- one paper-scale BatchNorm DLN run (10k full-batch steps) with ICS, landscape, activation and sigma
  probes every 50 steps, end to end through bnlab.train.run (target: under 60 s on a 2-core CPU).
"""

import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bnlab.config import compose
from bnlab.train import Trainer, run

torch.set_num_threads(1)
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
    """One paper-scale BatchNorm DLN run with every probe every 50 steps, end to end through bnlab.train.run."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run(compose(["norm=batch", "logger=none", "runtime.progress=false", f"runtime.runs_dir={tmp}"]))
        return round(time.perf_counter() - started, 1)
