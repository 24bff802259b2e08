"""Helpers shared by the tests of interrupted, resumed and concurrent runs, and of the GPU fast path."""

import pytest
import torch

from bnlab import store
from bnlab.config import compose
from bnlab.training.runner import run

SHORT = ["scale=smoke", "norm=batch", "train.steps=120", "probes.every=20", "runtime.checkpoint_every=40",
         "runtime.log_every=20", "runtime.progress=false", "logger=none"]


def metrics(directory):
    m = store.read_metrics(directory)
    return m.assign(metric=m.metric.astype(str)).sort_values(["step", "metric", "layer"]).reset_index(drop=True)


def interrupted(runs_dir, monkeypatch, at_step, overrides=SHORT):
    """Run `overrides`, raising KeyboardInterrupt at `at_step` (an in-process stand-in for a kill)."""
    from bnlab.training.loop import Trainer

    real = Trainer.step

    def step(self, s):
        if s == at_step:
            raise KeyboardInterrupt
        real(self, s)

    monkeypatch.setattr(Trainer, "step", step)
    with pytest.raises(KeyboardInterrupt):
        run(compose([*overrides, f"runtime.runs_dir={runs_dir}"]))
    monkeypatch.setattr(Trainer, "step", real)
    return store.run_dir(compose([*overrides, f"runtime.runs_dir={runs_dir}"]))


# Operators whose result the host must wait for on a GPU: a value read back (item, bool, float), or an
# output whose size depends on the data.
HOST_WAITING_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "equal", "is_nonzero", "unique", "_unique2"}
# Tensor methods that read values into Python or move a tensor between devices (on a GPU: a wait).
HOST_READING_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__",
                        "__array__")


class HostReads:
    """Counts, by name, what would make the host wait for a GPU while active: reading a tensor's values
    into Python, operators with data-dependent output sizes, `.to()` with a device (a copy between
    devices, or a no-op: counted either way, as this check cannot tell them apart on a CPU) and
    `torch.tensor(..., device=...)` (a copy from the host). On a CPU nothing waits, so this stands in for
    torch.cuda.set_sync_debug_mode, which is also set to "error" on CUDA."""

    def __init__(self, monkeypatch):
        from torch.utils._python_dispatch import TorchDispatchMode

        self.counts: dict[str, int] = {}
        self.active = False
        reads = self

        class Ops(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func.overloadpacket.__name__ in HOST_WAITING_OPS:
                    reads.note(func.overloadpacket.__name__)
                return func(*args, **(kwargs or {}))

        self._ops = Ops
        for name in HOST_READING_METHODS:
            monkeypatch.setattr(torch.Tensor, name, self._counting(name, getattr(torch.Tensor, name)))
        real_to, real_tensor = torch.Tensor.to, torch.tensor

        def to(tensor, *args, **kwargs):
            if "device" in kwargs or any(isinstance(a, (torch.device, str)) for a in args):
                reads.note("to(device)")
            return real_to(tensor, *args, **kwargs)

        def tensor(*args, **kwargs):
            if kwargs.get("device") is not None:
                reads.note("tensor(device=)")
            return real_tensor(*args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "to", to)
        monkeypatch.setattr(torch, "tensor", tensor)

    def _counting(self, name, method):
        def counted(tensor, *args, **kwargs):
            self.note(name)
            return method(tensor, *args, **kwargs)
        return counted

    def note(self, name: str) -> None:
        if self.active:
            self.counts[name] = self.counts.get(name, 0) + 1

    def __enter__(self):
        self.counts, self.active = {}, True
        self._mode = self._ops()
        self._mode.__enter__()
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("error")
        return self

    def __exit__(self, *exc):
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("default")
        self._mode.__exit__(*exc)
        self.active = False
