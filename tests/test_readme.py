"""Every command the README shows (its ```bash blocks) runs as written. Each block runs in one bash shell
from the checkout, as a reader would paste it, with BNLAB_DRY_RUN=1 in the environment: commands that
would train check their configs, launcher and data and say what they would train (a dry run), and every
other command runs for real. The commands listed in ELSEWHERE are run as written by the step named there."""

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


BLOCKS = bash_blocks((ROOT / "README.md").read_text())


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs_as_written(index, tmp_path):
    commands = [c for c in BLOCKS[index] if c not in ELSEWHERE]
    if not commands:
        pytest.skip(f"every command of this block runs in {', '.join(ELSEWHERE[c] for c in BLOCKS[index])}")
    env = {**os.environ, "BNLAB_DRY_RUN": "1", "BNLAB_RUNS": str(tmp_path / "runs"),
           "BNLAB_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline"}
    script = "set -euo pipefail\n" + "\n".join(f"echo {shlex.quote('$ ' + c)}\n{c}" for c in commands)
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"README block {index} failed:\n{done.stdout}\n{done.stderr}"
    for command in commands:
        assert f"$ {command}" in done.stdout
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("metrics.parquet"))
