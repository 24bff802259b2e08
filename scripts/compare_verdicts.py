"""Which verdicts differ between two claims.json files (the same figures made two ways: another memory layout,
another machine, before and after a change). A claims.json from before verdicts had three values (a `holds`
flag) reads as holds / fails.

    python scripts/compare_verdicts.py results/smoke/claims.json /tmp/other/smoke/claims.json

Exit code 1 when some verdict goes from holds to fails or back (a move to or from undecided is not a flip).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def verdicts(path: Path) -> dict[tuple[str, str], str]:
    out = {}
    for figure, entry in json.loads(path.read_text()).items():
        for c in entry["claims"]:
            out[(figure, c["claim"])] = c.get("verdict") or ("holds" if c["holds"] else "fails")
    return out


def compare(a: dict, b: dict) -> tuple[list, list]:
    """(flips between holds and fails, other changes), each a list of (figure, claim, verdict a, verdict b)."""
    flips, moves = [], []
    for key in sorted(set(a) & set(b)):
        if a[key] != b[key]:
            (flips if {a[key], b[key]} == {"holds", "fails"} else moves).append((*key, a[key], b[key]))
    return flips, moves


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    a, b = verdicts(args.a), verdicts(args.b)
    flips, moves = compare(a, b)
    only = len(set(a) ^ set(b))
    print(f"{len(set(a) & set(b))} claims in both ({only} in one only): {len(flips)} flipped between holds and "
          f"fails, {len(moves)} moved to or from undecided")
    for figure, claim, x, y in flips + moves:
        print(f"  {'FLIP' if (figure, claim, x, y) in flips else 'move'}  {figure}: {claim}: {x} -> {y}")
    return 1 if flips else 0


if __name__ == "__main__":
    sys.exit(main())
