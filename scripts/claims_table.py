"""The claim tables of docs/results.md, from a results folder's claims.json: one row per claim with the paper's value,
what was measured (means with their spread over seeds), each seed's outcome and the verdict.

    python scripts/claims_table.py results/smoke/claims.json [--figures figure1,figure2]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from experiments.lib.report import VERDICT_TEXT


def table(data: dict, figures: list[str] | None = None) -> str:
    lines = ["| figure | claim | paper | measured | per seed; on the mean | verdict |", "|---|---|---|---|---|---|"]
    counts = Counter()
    for figure, entry in data.items():
        if figures and figure not in figures:
            continue
        for c in entry["claims"]:
            counts[c["verdict"]] += 1
            seeds = ", ".join(c["outcomes"]["seeds"].values())
            lines.append(f"| {figure} | {c['claim']} | {c['paper']} | {c['measured']} | {seeds}; "
                         f"{c['outcomes']['mean']} | {VERDICT_TEXT[c['verdict']]} |")
    total = sum(counts.values())
    summary = ", ".join(f"{counts[v]} {v}" for v in ("holds", "fails", "undecided"))
    return "\n".join(lines) + f"\n\n{total} claims: {summary}."


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("claims", type=Path)
    parser.add_argument("--figures", default="", help="comma-separated figures (default: all)")
    args = parser.parse_args(argv)
    print(table(json.loads(args.claims.read_text()), [f for f in args.figures.split(",") if f] or None))


if __name__ == "__main__":
    main()
