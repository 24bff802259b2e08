"""`bnlab-runs`: listing the run store with filters, showing one run, looking up the run a command makes,
and comparing runs (a table and an overlay plot)."""

import pytest
from PIL import Image

from bnlab.cli.runs import main
from bnlab.config import compose
from bnlab.store import read_metrics
from bnlab.training.runner import run

TINY = ["train.steps=30", "probes.every=10", "runtime.log_every=10", "runtime.progress=false", "logger=none",
        "scale=smoke"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, extra in {"none": ["norm=none"], "batch": ["norm=batch"], "batch1": ["norm=batch", "seed=1"],
                        "bias": ["norm=none", "model.bias=true"]}.items():
        made[name] = run(compose([*TINY, *extra, f"runtime.runs_dir={root}"]))
    return root, made


def test_ls_lists_every_run_with_its_settings_and_filters_them(store, capsys):
    root, made = store
    assert main(["ls", "--runs", str(root)]) == 0
    out = capsys.readouterr().out
    assert all(d.name in out for d in made.values()) and "4 of 4 runs" in out
    header = out.splitlines()[0].split()
    assert header[:7] == ["key", "model", "norm", "lr", "seed", "scale", "status"]
    assert main(["ls", "--runs", str(root), "norm=batch", "seed=1"]) == 0
    out = capsys.readouterr().out
    assert made["batch1"].name in out and made["batch"].name not in out and "1 of 4 runs" in out
    assert main(["ls", "--runs", str(root), "lr=1e-6", "model.bias=true"]) == 0  # an alias, and a config key
    assert made["bias"].name in capsys.readouterr().out
    assert main(["ls", "--runs", str(root), "norm=linf"]) == 1


def test_show_prints_config_summary_and_files_of_one_run(store, capsys):
    root, made = store
    assert main(["show", "--runs", str(root), made["none"].name[:-4]]) == 0  # a key's start is enough
    out = capsys.readouterr().out
    assert f"directory {made['none']}" in out and "metrics.parquet" in out and "status: finished" in out
    assert "kind: none" in out  # the config
    assert main(["show", "--runs", str(root), "dln-batch"]) == 1  # two runs match: name one
    assert "2 runs match" in capsys.readouterr().err


def test_lookup_finds_the_run_a_command_would_make(store, capsys, monkeypatch):
    root, made = store
    assert main(["lookup", *TINY, "norm=batch", f"runtime.runs_dir={root}"]) == 0
    out = capsys.readouterr().out
    assert f"run {made['batch'].name}" in out and "status finished" in out
    assert main(["lookup", *TINY, "norm=l2", f"runtime.runs_dir={root}"]) == 0
    assert "not in the store yet" in capsys.readouterr().out
    assert main(["lookup", "optim.lr=-1"]) == 2


def test_compare_tabulates_and_plots_the_chosen_runs(store, capsys, tmp_path):
    root, made = store
    out_png = tmp_path / "cmp.png"
    assert main(["compare", "--runs", str(root), "norm=none", "--metric", "loss", "--out", str(out_png)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.startswith("dln-")}
    assert set(rows) == {made["none"].name, made["bias"].name}
    loss = read_metrics(made["bias"])
    last = loss[loss.metric == "loss"].sort_values("step").value.iloc[-1]
    assert f"{last:.4g}" in rows[made["bias"].name] and "model.bias=True" in rows[made["bias"].name]
    with Image.open(out_png) as image:
        assert image.size[0] > 800 and len(set(image.convert("RGB").getdata())) > 50  # lines were drawn
    assert main(["compare", "--runs", str(root), "norm=none", "--metric", "no_such", "--out", str(out_png)]) == 1
