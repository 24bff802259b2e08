"""Crash-safe runs: checkpoints and metric segments inside the run directory.

    <run>/checkpoint.pt        model, optimizer, every random generator's state, the step to resume at,
    <run>/checkpoint.prev.pt   the one before it (a fallback when the newest is damaged)
    <run>/segments/metrics-<step>.parquet   the metric rows logged before <step>, one file per checkpoint

Every file is written to a temporary name and renamed into place. A segment is written before the
checkpoint that counts it, so a crash between the two leaves a segment no checkpoint refers to, which is
dropped on resume. The data order needs no state: batch t is a function of (seed, t).

A checkpoint is given up only when it is proven damaged: not a complete zip archive (truncated), or a
record whose CRC-32 does not match (torch.load itself reads a flipped bit without a word). One that is
intact but cannot be read here (say, a torch that cannot read it) stops the run and is kept. Tensors load
onto the CPU whatever device saved them (a GPU checkpoint resumes on a node without CUDA);
load_state_dict then moves them where the run's own tensors are.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

import pandas as pd
import torch

from bnlab.store.runs import write_metrics
from bnlab.util.files import atomic_write

log = logging.getLogger("bnlab")
CURRENT, PREVIOUS, SEGMENTS = "checkpoint.pt", "checkpoint.prev.pt", "segments"


class CheckpointError(RuntimeError):
    """A checkpoint that must not be resumed from (it belongs to a different config), or an intact one that
    cannot be read here; either way it is kept."""


def save(directory: Path, state: dict, columns: dict[str, list], persisted_rows: int) -> int:
    """Append the rows logged since the last checkpoint as a segment, then write the checkpoint (the older
    one kept as a fallback). Returns the number of rows now on disk."""
    (directory / SEGMENTS).mkdir(exist_ok=True)
    write_metrics(directory / SEGMENTS, {k: v[persisted_rows:] for k, v in columns.items()},
                        name=f"metrics-{state['step']:09d}.parquet")
    if (directory / CURRENT).exists():
        os.replace(directory / CURRENT, directory / PREVIOUS)
    atomic_write(directory / CURRENT, lambda p: torch.save(state, p))
    return len(columns["step"])


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def load(directory: Path, identity: dict, device_type: str | None = None) -> tuple[dict, dict[str, list]] | None:
    """The newest readable checkpoint and the metric rows logged before it, or None (start afresh).

    A damaged checkpoint falls back to the previous one, saying so. A checkpoint of another config raises
    CheckpointError naming the keys that differ, and so does one written on another kind of device than
    `device_type` (when given): the batch order and BatchNorm's noise come from the device's own generator,
    so such a resume would splice two trajectories."""
    for name in (CURRENT, PREVIOUS):
        path = directory / name
        if not path.exists():
            continue
        damage = damaged(path)
        if damage:
            log.warning("checkpoint %s is damaged (%s); falling back to an older one", path, damage)
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - intact yet unreadable here: not a reason to lose the run
            raise CheckpointError(
                f"{path} is intact but cannot be read here ({type(exc).__name__}: {exc}). Nothing was deleted: "
                f"resume it with the torch version that wrote it (its summary.json says which), or delete "
                f"{directory} to start the run afresh.") from exc
        saved, identity = json.loads(state["identity"]), json.loads(json.dumps(identity, sort_keys=True))
        if saved != identity:
            a, b = _flat(saved), _flat(identity)
            keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            raise CheckpointError(f"{path} was written by a different config (differing keys: {', '.join(keys)}); "
                                  f"it will not be resumed. Delete {directory} to start the run afresh.")
        # checkpoints from before the key: a CUDA generator state is saved on CUDA only
        written_on = state.get("device_type") or ("cuda" if state.get("cuda_rng") is not None else "cpu")
        if device_type is not None and written_on != device_type:
            raise CheckpointError(
                f"{path} was written on {written_on} and this process trains on {device_type}: resuming would "
                f"splice two trajectories (the batch order and BatchNorm's noise are drawn by the device's own "
                f"generator). Nothing was deleted: resume it on {written_on} (runtime.device={written_on}), or "
                f"delete {directory} to start the run afresh here.")
        columns = _segments_before(directory, state["step"])
        if columns is None:
            log.warning("metric segments of %s are incomplete; falling back to an older checkpoint", path)
            continue
        log.info("resuming %s at step %d", directory.name, state["step"])
        return state, columns
    if (directory / CURRENT).exists() or (directory / PREVIOUS).exists():
        log.warning("no usable checkpoint in %s; the run starts again from step 0", directory)
    clear(directory)
    return None


def damaged(path: Path) -> str | None:
    """Why the checkpoint at `path` is proven damaged, or None when it is an intact archive."""
    if not zipfile.is_zipfile(path):
        return "truncated, or not a checkpoint archive"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        return f"unreadable archive: {exc}"
    return f"its record {bad} fails its CRC-32 check" if bad else None


def _segments_before(directory: Path, step: int) -> dict[str, list] | None:
    """Rows of the segments up to `step` (later ones, written by a checkpoint that never landed, are
    removed); None if one cannot be read."""
    frames = []
    for path in sorted((directory / SEGMENTS).glob("metrics-*.parquet")):
        if int(path.stem.split("-")[1]) > step:
            path.unlink()
            continue
        try:
            frames.append(pd.read_parquet(path))
        except Exception:  # noqa: BLE001
            return None
    frame = pd.concat(frames) if frames else pd.DataFrame(columns=["step", "metric", "layer", "value"])
    if len(frame) and frame["step"].max() >= step:
        return None
    return {"step": frame["step"].astype(int).tolist(), "metric": frame["metric"].astype(str).tolist(),
            "layer": frame["layer"].astype(int).tolist(), "value": frame["value"].astype(float).tolist()}


def clear(directory: Path) -> None:
    """Remove checkpoints and segments (once metrics.parquet holds everything, or to start afresh)."""
    for name in (CURRENT, PREVIOUS):
        (directory / name).unlink(missing_ok=True)
    for path in (directory / SEGMENTS).glob("*"):
        path.unlink()
    if (directory / SEGMENTS).exists():
        (directory / SEGMENTS).rmdir()
