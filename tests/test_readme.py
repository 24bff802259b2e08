"""Every command the README and docs/ show (their ```bash blocks) runs as written. Each block runs in one bash
shell from the checkout, as a reader would paste it, with BNLAB_DRY_RUN=1 in the environment: commands that
would train check their configs, launcher and data and say what they would train (a dry run), and every
other command runs for real. The README's first run (the block that compares runs) trains for real, in a
folder of its own. The commands listed in ELSEWHERE are run as written by the step named there; those in
NOT_RUN cannot run on a machine without a GPU or pytorch.org, and say why."""

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
ELSEWHERE = {
    "make test": ".ci/run",
    "make lint": ".ci/run",
    "scripts/slurm-local.sh start": "tests/test_slurm.py (the slurm_cluster fixture)",
    'eval "$(scripts/slurm-local.sh env)"': "tests/test_slurm.py (the slurm_cluster fixture reads `env`)",
    "scripts/slurm-local.sh stop": "tests/test_slurm.py (the slurm_cluster fixture)",
}
NOT_RUN = {  # docs/gpu.md: installing torch for an older driver, from pytorch.org's index (not reachable here)
    "python -m venv .venv && .venv/bin/pip install torch torchvision --index-url https://download.pytorch.org/whl/cu126":
        "pytorch.org's index",
    '.venv/bin/pip install -e ".[dev]"': "the line after it, in a fresh environment",
}
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def bash_blocks(text: str) -> list[list[str]]:
    """The commands of each ```bash block: comments dropped, continued lines joined."""
    blocks = []
    for body in re.findall(r"^[ \t]*```bash\n(.*?)^[ \t]*```", text, flags=re.M | re.S):
        commands = []
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#\s.*$", "", line).strip()
            if line:
                commands.append(line)
        blocks.append(commands)
    return blocks


def test_the_parser_reads_blocks_as_bash_would():
    text = ("x\n```bash\nmake a   # note\n# only a comment\nb c \\\n  d\n```\n```python\nnot = 1\n```\n"
            "- item:\n\n  ```bash\n  eval \"$(x env)\"  # in a list\n  ```\n")
    assert bash_blocks(text) == [["make a", "b c    d"], ['eval "$(x env)"']]


def test_the_readme_opens_with_the_two_commands():
    first = bash_blocks((ROOT / "README.md").read_text())[0]
    assert first == ["make reproduce-all SCALE=smoke", "make test"]


BLOCKS = [(f"{page.relative_to(ROOT)}#{i}", block) for page in PAGES
          for i, block in enumerate(bash_blocks(page.read_text()))]
FIRST_RUN = [block for name, block in BLOCKS if name.startswith("README") and
             any("bnlab-runs compare" in c for c in block)]
DRY = [(name, block) for name, block in BLOCKS if block not in FIRST_RUN]


def test_every_page_of_docs_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    assert [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in readme] == []
    assert len(readme.splitlines()) <= 250


@pytest.mark.parametrize("name, block", DRY, ids=[name for name, _ in DRY])
def test_readme_block_runs_as_written(name, block, tmp_path):
    commands = [c for c in block if c not in ELSEWHERE and c not in NOT_RUN]
    if not commands:
        pytest.skip(f"every command of this block runs in {', '.join(ELSEWHERE.get(c, '') for c in block)} "
                    f"or cannot here: {', '.join(NOT_RUN.get(c, '') for c in block)}")
    env = {**os.environ, "BNLAB_DRY_RUN": "1", "BNLAB_RUNS": str(tmp_path / "runs"),
           "BNLAB_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline"}
    script = "set -euo pipefail\n" + "\n".join(f"echo {shlex.quote('$ ' + c)}\n{c}" for c in commands)
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    for command in commands:
        assert f"$ {command}" in done.stdout
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("metrics.parquet"))


def test_the_first_run_trains_and_compares_as_written(tmp_path):
    """The README's first run, for real: two DLN runs and a short VGG run at smoke scale, the store listed, the
    DLN runs compared into a plot; in a folder of its own (the commands' relative paths resolve there)."""
    assert len(FIRST_RUN) == 1
    data = os.environ.get("BNLAB_DATA")
    if not data and not (ROOT / "data").exists():
        pytest.skip("no CIFAR-10 here (BNLAB_DATA unset, no ./data) and no internet to download it")
    for name in (".venv", "Makefile", "pyproject.toml"):  # `make setup` finds .venv set up: nothing to do
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("BNLAB_DRY_RUN", None)
    if not data:
        env["BNLAB_DATA"] = str(ROOT / "data")
    script = "set -euo pipefail\n" + "\n".join(FIRST_RUN[0])
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"the first run failed:\n{done.stdout}\n{done.stderr}"
    assert (tmp_path / "dln-loss.png").stat().st_size > 10_000
    assert len(list((tmp_path / "first-runs" / "smoke").glob("*/summary.json"))) == 3
    listed = [line for line in done.stdout.splitlines() if "-seed0-" in line]
    assert sum("finished" in line for line in listed) >= 3
    assert any(line.startswith("dln-batch") for line in listed) and any(line.startswith("vgg-none") for line in listed)
