"""Which device a run uses, and how it is described in a run's summary.

A run that was given a GPU never trains on the CPU instead: when SLURM or CUDA_VISIBLE_DEVICES gave the
process a GPU and CUDA does not come up (a driver older than torch's CUDA build needs, a GPU older than the
build supports), resolving the device fails at once, saying why and what to install. The check runs where
the run trains (a SLURM task), never on the login node that submits it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import warnings

import torch

# The oldest Linux driver each CUDA major version runs on (NVIDIA's CUDA compatibility tables; minor
# version compatibility within a major version).
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
# Environment variables through which a scheduler or a user hands this process a GPU.
GPU_VARIABLES = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES")


class DeviceError(RuntimeError):
    """The run asked for (or was given) a GPU that CUDA cannot use here."""


def gpu_given() -> str | None:
    """The variable that gave this process a GPU ("NAME=value"), or None."""
    for name in GPU_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value and value not in ("-1", "NoDevFiles", "none"):
            return f"{name}={value}"
    return None


def resolve_device(name: str) -> torch.device:
    """The device for `runtime.device`: "auto" is CUDA when it works and the CPU when no GPU was given;
    DeviceError when CUDA was asked for, or a GPU given, and CUDA does not work."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        given = gpu_given()
        if given:
            raise DeviceError(cuda_failure(f"this process was given a GPU ({given})"))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(cuda_failure(f"runtime.device={name}"))
    return device


def compute_modes() -> list[str]:
    """The compute mode of the GPU this process trains on (the first of CUDA_VISIBLE_DEVICES, or GPU 0) as
    nvidia-smi names it ("Default", "Exclusive_Process", ...); [] when nvidia-smi is not there."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip() or "0"
    try:
        out = subprocess.run(["nvidia-smi", "-i", visible, "--query-gpu=compute_mode", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def check_processes_per_gpu(processes: int, device: str, what: str) -> None:
    """Several training processes on one GPU need its compute mode to allow them: on a GPU in exclusive-process
    mode the second one fails to start. Refuse before starting any (DeviceError)."""
    if processes < 2 or resolve_device(device).type != "cuda":
        return
    exclusive = [mode for mode in compute_modes() if mode.lower().startswith("exclusive")]
    if exclusive:
        raise DeviceError(f"{what} would put {processes} training processes on one GPU, whose compute mode is "
                          f"{exclusive[0]}: it admits one process. Train one run per process (--pack 1, or "
                          f"--jobs 1 here); DLN seeds still share a process as one stacked model.")


def driver_version() -> str | None:
    try:
        # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14 ..."
        with open("/proc/driver/nvidia/version") as f:
            words = f.readline().split()
    except OSError:
        words = []
    for word in words:
        if word.count(".") >= 1 and word.replace(".", "").isdigit():
            return word
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.split()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def cuda_failure(why: str) -> str:
    """Why CUDA is wanted, what torch says about it, torch's CUDA build, the driver, and what to install."""
    with warnings.catch_warnings(record=True) as caught:  # torch says why CUDA did not come up as a warning
        warnings.simplefilter("always")
        torch.cuda.is_available()
    said = "; ".join(str(w.message).split("\n")[0] for w in caught)
    build = torch.version.cuda
    driver = driver_version()
    lines = [f"CUDA is not available, but {why}." + (f" torch {torch.__version__} says: {said}." if said else ""),
             f"This torch ({torch.__version__}) is built for CUDA {build or 'nothing (a CPU-only build)'}; "
             f"the NVIDIA driver here is {driver or 'not found'}."]
    if build:
        need = MIN_DRIVER.get(int(build.split(".")[0]))
        archs = " ".join(torch.cuda.get_arch_list()) or "unknown"
        lines.append(f"A CUDA {build} build needs driver {need or 'a recent one'} or newer and a GPU of one of "
                     f"these architectures: {archs}.")
    lines.append("Install a torch built for this driver (docs/gpu.md: e.g. `pip install torch torchvision "
                 "--index-url https://download.pytorch.org/whl/cu126` for drivers from 525.60), or, to train "
                 "on the CPU on purpose, set runtime.device=cpu.")
    return " ".join(lines)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
