"""Metric rows gathered during training and converted to floats in batches.

Values may be 0-d tensors still on the device: converting them one by one would synchronize with the
device at every step, so they are stacked and copied to the host together when the loop flushes.
"""

from __future__ import annotations

import torch


class MetricRows:
    def __init__(self):
        self.pending: list[tuple[int, str, int, object]] = []
        self.columns: dict[str, list] = {"step": [], "metric": [], "layer": [], "value": []}

    def add(self, step: int, metric: str, layer: int, value) -> None:
        self.pending.append((step, metric, layer, value))

    def flush(self) -> list[tuple[int, str, int, float]]:
        """Move pending rows to the columns; return them with float values."""
        if not self.pending:
            return []
        tensors = [v for *_, v in self.pending if isinstance(v, torch.Tensor)]
        floats = iter(torch.stack([t.detach().reshape(()).double() for t in tensors]).tolist()) if tensors else iter(())
        flushed = []
        for step, metric, layer, value in self.pending:
            value = next(floats) if isinstance(value, torch.Tensor) else float(value)
            flushed.append((step, metric, layer, value))
            for column, item in zip(("step", "metric", "layer", "value"), (step, metric, layer, value), strict=True):
                self.columns[column].append(item)
        self.pending = []
        return flushed
