"""`bnlab-figure`'s entry point. `bnlab-figure --list` with nothing changed since the last listing prints
the listing it saved, without importing torch, Hydra or a figure (seconds each time); everything else,
and a listing after a change, is experiments.cli."""

from __future__ import annotations

import sys

from experiments.lib.listing import listing_cache


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--list"]:
        saved = listing_cache()
        if saved.is_file():
            sys.stdout.write(saved.read_text())
            return 0
    from experiments.cli import main as figure_main

    return figure_main(argv)
