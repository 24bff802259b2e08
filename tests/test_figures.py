"""Figures end to end at a tiny scale (VGG on the tests' tiny CIFAR-10 copy): train the sweep, draw, write
claims; then redraw without training."""

import json

import pytest

from experiments.cli import main

TINY = ["train.steps=40", "probes.every=20", "runtime.log_every=20", "logger=none", "scale.vgg.width=0.0625",
        "scale.vgg.train_subset=null", "scale.vgg.eval_every=20", "scale.vgg.eval_train_examples=100",
        "scale.vgg.eval_test_examples=null"]


@pytest.mark.slow
def test_smoke_figure_end_to_end_and_redraw(tmp_path, runs_dir, tiny_cifar, capsys):
    out = tmp_path / "results"
    assert main(["figure3", "--scale", "smoke", "--seeds", "1", "--train", "--jobs", "1", "--out", str(out),
                 *TINY]) == 0
    png = out / "smoke" / "figure3.png"
    assert png.exists() and png.stat().st_size > 20_000
    claims = json.loads((out / "smoke" / "claims.json").read_text())["figure3"]
    dln_low, dln_high, vgg = claims["claims"]
    assert claims["seeds"] == 1 and claims["spread"] == "one seed" and dln_low["measured"].startswith("cos standard")
    assert dln_low["claim"].startswith("DLN at lr 1e-07") and dln_high["measured"].startswith("layer #9: cos standard")
    assert vgg["measured"].startswith("lr 0.1: cos standard")  # the VGG panels
    assert all(c["quote"] and c["rule"] for c in claims["claims"])
    readme = (out / "smoke" / "README.md").read_text()
    assert "## figure3" in readme and "| claim | the paper | rule | tie band | paper's value | measured | per seed |" \
        in readme
    first = capsys.readouterr().out
    assert "8 distinct runs needed: 0 already in the store, 0 to be served by a probed run" in first

    png.unlink()
    assert main(["figure3", "--scale", "smoke", "--seeds", "1", "--out", str(out), *TINY]) == 0  # redraw only
    assert png.exists()
    assert "to train" not in capsys.readouterr().out


@pytest.mark.slow
def test_every_figure_draws(tmp_path, runs_dir, tiny_cifar):
    from experiments import figure_names

    out = tmp_path / "results"
    for group in ("all", "beyond"):
        assert main([group, "--scale", "smoke", "--seeds", "2", "--train", "--jobs", "2", "--out", str(out),
                     *TINY]) == 0
    for name in figure_names():
        assert (out / "smoke" / f"{name}.png").stat().st_size > 20_000, name
    claims = json.loads((out / "smoke" / "claims.json").read_text())
    assert list(claims) == figure_names()  # in the paper's order, those beyond it last
    every = [c for f in claims.values() for c in f["claims"]]
    assert len(every) >= 40 and all(c["measured"] and c["tie_band"] and c["quote"] for c in every)
    for c in every:  # two seeds: each judged, and the verdict follows from the outcomes
        assert c["verdict"] in ("holds", "fails", "undecided") and set(c["outcomes"]["seeds"]) == {"0", "1"}
        outcomes = list(c["outcomes"]["seeds"].values())
        if c["verdict"] == "holds":
            assert c["outcomes"]["mean"] == "holds" and set(outcomes) == {"holds"}
        if c["verdict"] == "fails":
            assert c["outcomes"]["mean"] == "fails" and outcomes.count("fails") == 2
        for v in c["values"].values():  # (nan: never measured, such as the steps to an accuracy never reached)
            assert len(v["per_seed"]) == 2 and not v["interval"][0] > v["interval"][1]
