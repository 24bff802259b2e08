"""Datasets as the training loop sees them: a batch per step, already on the device, and the loss."""

from __future__ import annotations

import torch


class GaussianRegression:
    """The DLN's task (SPEC section 1): fit A x from x, x ~ N(0, input_std^2 I), A_ij ~ N(0, target_std^2).

    The data are fixed for the run, drawn from `seed`, and the batch is the whole dataset (full-batch
    gradient descent). The loss is half the squared error summed over samples (TensorFlow's l2_loss; the
    default, chosen by measurement, see the README), the plain sum, or the mean over samples.
    """

    classification = False

    def __init__(self, width: int, num_samples: int, seed: int, input_std: float, target_std: float,
                 loss: str, device: torch.device, dtype: torch.dtype):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(num_samples, width, generator=g, dtype=torch.float64) * input_std
        a = torch.randn(width, width, generator=g, dtype=torch.float64) * target_std
        self.inputs = x.to(device, dtype)
        self.targets = (x @ a.T).to(device, dtype)
        self.reduction = loss

    def train_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs, self.targets

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        squared = (outputs - targets).square().sum()
        if self.reduction == "half_sum":
            return squared / 2
        if self.reduction == "mean":
            return squared / outputs.shape[0]
        return squared


def build_data(cfg, device: torch.device, dtype: torch.dtype):
    d = cfg.data
    if d.name == "gaussian":
        return GaussianRegression(cfg.model.width, d.num_samples, d.seed, d.input_std, d.target_std, d.loss,
                                  device, dtype)
    raise ValueError(f"data.name: unknown dataset {d.name!r}; allowed: gaussian")
