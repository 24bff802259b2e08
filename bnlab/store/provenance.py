"""Where a run's result came from: the code's version, recorded in its summary."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit() -> str:
    try:
        command = ["git", "describe", "--always", "--dirty", "--abbrev=40"]
        out = subprocess.run(command, cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
