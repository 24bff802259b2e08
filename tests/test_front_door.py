"""What a newcomer meets first: `make help`, `bnlab-figure --list`, and dry runs (BNLAB_DRY_RUN=1) that
check a command without training anything."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bnlab.config import compose, probes_enabled
from bnlab.launch import costs
from bnlab.launch.plan import fresh_runs
from bnlab.training.probe_schedule import step_kind
from experiments import cli as figure_cli
from experiments.lib.runs import sweep

ROOT = Path(__file__).parents[1]


def test_make_help_lists_every_target_with_one_line():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z%][a-z%-]*):", makefile, flags=re.M))
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    listed = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert targets == set(listed), f"make help misses {targets - set(listed)}"
    assert all(len(line.split(None, 1)) == 2 for line in listed.values())  # each with its description
    assert subprocess.run(["make", "-s"], cwd=ROOT, capture_output=True, text=True).stdout == out  # the default


def test_list_shows_each_figure_with_what_it_reproduces_and_its_cost(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BNLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(figure_cli, "figure_names", lambda: ["figure1", "dln-landscape"])
    assert figure_cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "Figure 1: VGG with and without BatchNorm" in out and "Figure 10: loss landscape" in out
    for name in ("figure1", "dln-landscape"):
        for scale in ("smoke", "paper"):
            seeds = compose([f"scale={scale}"]).scale.seeds
            runs = sweep(name, scale, seeds)
            assert f"{scale}: {len(runs)} runs ({seeds} seed" in out.split(f"\n{name}\n")[1].split("\n\n")[0]
            assert f"{sum(c.train.steps for c in runs):,} steps" in out
    # the costs are cached by a digest of the configs: a second listing reads them back
    cached = sorted(p.name for p in (tmp_path / "figure-costs").iterdir())
    assert len(cached) == 2
    figure_cli.main(["--list"])
    assert capsys.readouterr().out == out
    # and the whole listing is saved: `bnlab-figure --list` prints it again without importing torch or a figure
    listed = subprocess.run([sys.executable, "-c", "import sys\nfrom experiments.lib.entry import main\n"
                             "main(['--list'])\n"
                             "sys.stderr.write(str(sorted(m for m in sys.modules if m.split('.')[0] in "
                             "('torch', 'hydra', 'matplotlib') or m.startswith('experiments.figure'))))"],
                            env={**os.environ, "BNLAB_CACHE": str(tmp_path)}, capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0 and listed.stdout == out and listed.stderr == "[]"


def test_fresh_runs_drops_duplicates_and_unprobed_twins():
    probed = compose(["model=dln", "scale=smoke", "train.steps=10"])
    unprobed = compose(["model=dln", "scale=smoke", "train.steps=10", "probes=none"])
    other = compose(["model=dln", "scale=smoke", "train.steps=10", "probes=none", "seed=1"])
    assert [c.seed for c in fresh_runs([probed, unprobed, probed, other])] == [0, 1]
    assert len(fresh_runs([unprobed])) == 1  # alone, the unprobed run is trained


def test_estimated_seconds_follows_steps_width_and_probes():
    base = ["model=vgg", "scale=smoke", "probes=none", "norm=batch"]
    small, wide = compose([*base, "train.steps=100"]), compose([*base, "train.steps=100", "model.width=1.0"])
    assert costs.estimated_seconds(compose([*base, "train.steps=200"])) == pytest.approx(
        2 * costs.estimated_seconds(small))
    assert costs.estimated_seconds(wide) == pytest.approx(
        costs.estimated_seconds(small) * 8 ** costs.VGG_WIDTH_EXPONENT)
    assert costs.estimated_seconds(small) == pytest.approx(100 * costs.STEP_SECONDS["vgg"]["batch"])
    probed = compose(["model=vgg", "scale=smoke", "norm=batch", "train.steps=100"])
    # probe steps 0, 40 and 80, each carrying the probes' extra cost of the 40 steps it stands for; and the
    # landscape alone at step 10, the early window's (the first 20 steps), its 8 multipliers and the gradient
    # each a forward and backward pass beside the step's own
    extra = 3 * (costs.PROBED_STEP_FACTOR["vgg"] - 1) * 40 + (2 + 8 - 1)
    assert probed.probes.every == 40 == costs.PROBED_EVERY["vgg"] and costs.step_kinds(probed)["early"] == 1
    assert costs.estimated_seconds(probed) == pytest.approx(costs.estimated_seconds(small) * (100 + extra) / 100)
    # a probe step costs the same at another interval: probes every 20 are 5 probe steps, each as dear as above
    denser = compose(["model=vgg", "scale=smoke", "norm=batch", "train.steps=100", "probes.every=20"])
    assert costs.estimated_seconds(denser) == pytest.approx(
        costs.estimated_seconds(small) * (100 + (extra - 9) * 5 / 3 + 9) / 100)


@pytest.mark.parametrize("overrides", [
    ["model=vgg", "scale=smoke", "train.steps=97"], ["model=dln", "scale=smoke", "train.steps=1000"],
    ["model=dln", "probes=none", "train.steps=50"], ["model=vgg", "scale=smoke", "train.steps=5"],
    ["model=vgg", "probes.every=1", "train.steps=9"], ["model=vgg", "scale=smoke", "train.steps=500"],
    ["model=vgg", "scale=smoke", "train.steps=203", "probes.landscape.early.every=7"],
    ["experiment=curvature", "model=dln", "scale=smoke", "train.steps=333", "probes.theorems.every=7"]])
def test_step_kinds_counts_each_step_as_the_loop_treats_it(overrides):
    cfg = compose(overrides)
    naive = {"plain": 0, "probe": 0, "early": 0, "after": 0}
    for step in range(1, cfg.train.steps):
        naive[step_kind(cfg.probes, probes_enabled(cfg), step, cfg.train.steps)] += 1
    kinds = costs.step_kinds(cfg)
    assert {k: kinds[k] for k in naive} == naive and kinds["first"] == 1
    for curvature in ("hessian", "theorems"):  # measured at step 0 and every `every` steps, on top of the step
        probe = cfg.probes[curvature]
        due = sum(1 for step in range(cfg.train.steps) if probe.enabled and step % probe.every == 0)
        assert kinds.get(curvature, 0) == due, curvature


def test_figure_dry_run_plans_without_training_or_touching_the_data(runs_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BNLAB_DRY_RUN", "1")
    monkeypatch.setenv("BNLAB_DATA", str(tmp_path / "no-data"))
    assert figure_cli.main(["figure1", "--scale", "smoke", "--train", "--out", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert "dry run: 12 distinct runs needed, 0 already in the store, 0 served by a probed twin, 12 would train" in out
    listed = re.findall(rf"  would train {re.escape(str(runs_dir))}/smoke/(vgg-\S+) ", out)
    assert len(set(listed)) == 12  # each run it would train, by name
    assert f"would download CIFAR-10 into {tmp_path / 'no-data' / 'cifar-10-batches-py'}" in out
    assert not (tmp_path / "no-data").exists() and not (tmp_path / "results").exists()
    assert not list(runs_dir.rglob("*.parquet"))
    # a dry run still fails on what a real one would fail on, with the same message
    assert figure_cli.main(["figure1", "--scale", "smoke", "--train", "data.download=false"]) == 2
    assert "CIFAR-10 not found" in capsys.readouterr().err


def test_train_dry_run_checks_the_launcher_and_submits_nothing(tmp_path):
    env = {**os.environ, "BNLAB_DRY_RUN": "1", "BNLAB_RUNS": str(tmp_path / "runs")}
    command = [sys.executable, "-m", "bnlab.cli.train", "-m", "model=dln", "scale=smoke", "seed=0,1",
               "hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}/sweep"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "the launcher (hydra/launcher=slurm hydra.launcher.partition=gpu) composes" in done.stdout
    assert len(re.findall(r"dry run: would train .*/smoke/dln-none-lr1e-06-seed[01]-", done.stdout)) == 2
    assert not (tmp_path / "runs").exists() and not (tmp_path / "sweep" / ".submitit").exists()
    bad = subprocess.run([*command[:-2], "hydra.launcher.partiton=gpu"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "partiton" in bad.stderr and "Traceback" not in bad.stderr


def test_the_slurm_launcher_asks_for_gpus_as_a_generic_resource_every_slurm_accepts():
    from submitit.slurm.slurm import _make_sbatch_string

    from bnlab.config import compose

    launcher = compose(["hydra/launcher=slurm"], with_hydra=True).hydra.launcher
    script = _make_sbatch_string(command="true", folder="/tmp/%j", gres=launcher.gres,
                                 gpus_per_node=launcher.gpus_per_node, cpus_per_task=launcher.cpus_per_task)
    assert "#SBATCH --gres=gpu:1" in script and "--gpus-per-node" not in script


def test_overrides_that_change_the_runs_never_overwrite_the_committed_results(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:  # before anything is composed or trained
        figure_cli.main(["figure3", "--scale", "smoke", "train.steps=200"])
    assert err.value.code == 2 and "would overwrite the committed results/smoke/" in capsys.readouterr().err
    # a key the figure sweeps would leave it nothing to compare: refused before training
    assert figure_cli.main(["figure3", "--scale", "smoke", "--train", "norm=batch", "--out", str(tmp_path)]) == 2
    assert "figure figure3 sweeps norm over none,batch" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.json"))
    # model= picks one model's panels of a figure that has both; on a one-model figure it would draw another
    assert figure_cli.main(["figure1", "--scale", "smoke", "--train", "model=dln", "--out", str(tmp_path)]) == 2
    assert "figure figure1 draws the vgg only" in capsys.readouterr().err


def test_a_figure_drawn_with_overrides_says_so_in_its_readme(tmp_path):
    from experiments.lib.report import write_results

    write_results(tmp_path, "figure3", [], "notes", 1, "smoke", overrides=["train.steps=200"])
    readme = (tmp_path / "README.md").read_text()
    assert "**Made with overrides** (not the scale's settings): `train.steps=200`" in readme
    write_results(tmp_path, "figure3", [], "notes", 1, "smoke")
    assert "Made with overrides" not in (tmp_path / "README.md").read_text()
