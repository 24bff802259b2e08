"""A scale's results folder: claims.json, and the README.md written from it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from experiments.lib.claims import Claim


def write_results(out_dir: Path, figure: str, claims: list[Claim], notes: str, seeds: int, scale: str,
                  datasets: list[str] = (), order: list[str] = ()) -> None:
    """Merge this figure's claims into claims.json and rewrite README.md from it, figures in `order` (the
    paper's: experiments.figure_names())."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "claims.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[figure] = {"seeds": seeds, "notes": notes, "datasets": list(datasets), "claims": [asdict(c) for c in claims]}
    data = dict(sorted(data.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
    lines = [f"# bnlab results, scale `{scale}`", "",
             "Written by `make reproduce-<figure>` / `bnlab-figure` from the logged runs; do not edit by hand.", ""]
    for name, entry in data.items():
        used = "; ".join(entry.get("datasets", []))
        lines += [f"## {name}", "", f"![{name}]({name}.png)", "",
                  f"Seeds: {entry['seeds']}.{f' Data: {used}.' if used else ''} {entry['notes']}", ""]
        if entry["claims"]:
            lines += ["| claim | the paper | rule | paper's value | measured | holds |", "|---|---|---|---|---|---|"]
            lines += [f"| {c['claim']} | {c.get('quote', '')} | {c.get('rule', '')} | {c['paper']} | {c['measured']} | "
                      f"{'yes' if c['holds'] else '**no**'} |" for c in entry["claims"]]
            lines.append("")
    (out_dir / "README.md").write_text("\n".join(lines))
