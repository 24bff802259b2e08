"""Where `bnlab-figure --list` saves its listing (experiments.cli writes it, experiments.lib.entry reads it).
Importing this module imports nothing heavy."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def listing_cache() -> Path:
    """The saved listing, named by a digest of everything it is made from: the configs, the figure modules
    (what each reproduces) and the library (composing, planning, the cost model)."""
    digest = hashlib.sha256()
    sources = [*(ROOT / "configs").rglob("*.yaml"), *(ROOT / "experiments").rglob("*.py"),
               *(ROOT / "bnlab").rglob("*.py")]
    for path in sorted(sources):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return Path(os.environ.get("BNLAB_CACHE", "cache")) / "figure-list" / f"{digest.hexdigest()[:16]}.txt"
