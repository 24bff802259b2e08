"""A scale's results folder: claims.json, and the README.md written from it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from experiments.lib.claims import HOLDS, UNDECIDED, Claim, Report, spread_label

VERDICT_TEXT = {HOLDS: "holds", "fails": "**fails**", UNDECIDED: "*undecided*"}


def write_results(out_dir: Path, figure: str, claims: list[Claim], notes: str, seeds: int, scale: str,
                  datasets: list[str] = (), order: list[str] = (), reports: list[Report] = (),
                  overrides: list[str] = ()) -> None:
    """Merge this figure's claims into claims.json and rewrite README.md from it, figures in `order` (the
    paper's: experiments.figure_names())."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "claims.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    # entries written before verdicts had three values (a `holds` flag per claim) are dropped: they are
    # redrawn in the current form when their figure is
    data = {name: entry for name, entry in data.items() if all("verdict" in c for c in entry.get("claims", []))}
    data[figure] = {"seeds": seeds, "spread": spread_label(seeds), "notes": notes, "datasets": list(datasets),
                    "claims": [asdict(c) for c in claims], "reports": [asdict(r) for r in reports],
                    "overrides": list(overrides)}
    data = dict(sorted(data.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
    (out_dir / "README.md").write_text(readme(data, scale))


def readme(data: dict, scale: str) -> str:
    """The scale's README: each figure, its claims table and what it reports without judging."""
    lines = [f"# bnlab results, scale `{scale}`", "",
             "Written by `make reproduce-<figure>` / `bnlab-figure` from the logged runs; do not edit by hand.", "",
             "Each claim's rule is applied to every seed and to the mean over seeds. Verdicts: **holds** on the mean "
             "and in every seed (with 5 or more seeds, in all but one); **fails** on the mean and in most seeds; "
             "**undecided** when the seeds disagree or the margin lies inside the rule's tie band. Numbers are means "
             "over seeds with their spread in brackets, on the scale the rule uses (geometric for losses, landscape "
             "measures and eigenvalues; arithmetic for accuracies, cosines and shares).", ""]
    for name, entry in data.items():
        used = "; ".join(entry.get("datasets", []))
        lines += [f"## {name}", "", f"![{name}]({name}.png)", "",
                  f"Seeds: {entry['seeds']} (brackets: {entry.get('spread', spread_label(entry['seeds']))})."
                  f"{f' Data: {used}.' if used else ''} {entry['notes']}", ""]
        if entry.get("overrides"):
            lines += [f"**Made with overrides** (not the scale's settings): `{' '.join(entry['overrides'])}`.", ""]
        if entry["claims"]:
            lines += ["| claim | the paper | rule | tie band | paper's value | measured | per seed | verdict |",
                      "|---|---|---|---|---|---|---|---|"]
            lines += [f"| {c['claim']} | {c['quote']} | {c['rule']} | {c['tie_band']} | {c['paper']} | {c['measured']} "
                      f"| {seed_outcomes(c)} | {VERDICT_TEXT[c['verdict']]} |" for c in entry["claims"]]
            lines.append("")
        for r in entry.get("reports", []):
            lines += [f"Reported, not judged: {r['what']}: {r['measured']} ({r['why']}).", ""]
    return "\n".join(lines)


def seed_outcomes(claim: dict) -> str:
    """'holds, holds, tie; mean: holds' from a claim's outcomes."""
    seeds = claim["outcomes"]["seeds"]
    return f"{', '.join(seeds.values())}; mean: {claim['outcomes']['mean']}"
