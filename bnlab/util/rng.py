"""torch's global random generators (the CPU's and the device's), saved and restored as one state.

Runs, probes and checkpoints all need "the generators exactly as they were": a probe replays the draw
the training step saw, a checkpoint resumes the random stream where it stopped."""

from __future__ import annotations

import torch


def rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(CPU generator state, CUDA generator state of `device` or None off CUDA)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.random.get_rng_state(), cuda


def set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    """Restore what rng_state returned (a CUDA state only where there is one and the device is CUDA)."""
    torch.random.set_rng_state(state[0])
    if state[1] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state[1], device)
