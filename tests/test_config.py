"""Hydra composition of every experiment, and start-up validation of bad values."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bnlab.config import CONFIG_DIR, ConfigError, compose, run_key, validate
from experiments import figure_module, figure_names
from experiments.lib.runs import expand, sweep

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def test_every_figure_is_one_config_and_one_module_found_by_name():
    modules = sorted(p.stem for p in (Path(__file__).parents[1] / "experiments").glob("*.py")
                     if p.stem not in ("__init__", "cli"))
    assert modules == sorted(name.replace("-", "_") for name in EXPERIMENTS)
    for name in EXPERIMENTS:
        module = figure_module(name)
        assert callable(module.draw) and callable(module.claims) and isinstance(module.ORDER, int), name
    names = figure_names()
    assert sorted(names) == EXPERIMENTS
    assert names[:4] == ["figure1", "figure2", "figure3", "figure4"]  # the paper's order
    assert len({figure_module(n).ORDER for n in names}) == len(names)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_config_opens_with_its_command_what_it_reproduces_and_its_runtime(name):
    header = []
    for line in (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert header[0] == "# @package _global_"
    assert header[1].startswith(f"# make reproduce-{name} SCALE=smoke")
    assert f"bnlab-train -m experiment={name} scale=smoke" in header[2]
    assert any(line.startswith(("# Figure", "# Section")) for line in header), "what it reproduces"
    assert any(line.startswith("#   smoke: ") and "min" in line for line in header)
    assert any(line.startswith("#   paper: ") for line in header)


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("scale", ["smoke", "paper"])
def test_experiment_sweeps_compose_and_validate(name, scale):
    cfgs = sweep(name, scale, seeds=2)
    assert len(cfgs) >= 2 and len(cfgs) % 2 == 0  # two seeds of each config
    for cfg in cfgs:
        validate(cfg)
        assert cfg.experiment_name == name
    assert len({run_key(c) for c in cfgs}) == len(cfgs)  # every run of the sweep is distinct


@pytest.mark.parametrize("scale", ["smoke", "paper"])
@pytest.mark.parametrize("model", ["vgg", "dln"])
def test_every_scale_measures_the_landscape_often_enough_in_the_early_window(scale, model):
    """The early-window claims (experiments.lib.landscape) judge peaks and quantiles over the first EARLY of a
    run: at least MIN_EARLY_PROBES measurements there, at every scale."""
    from bnlab.training.probe_schedule import ProbeSchedule
    from experiments.lib.landscape import EARLY, MIN_EARLY_PROBES

    cfg = compose([f"model={model}", f"scale={scale}"])
    schedule = ProbeSchedule.__new__(ProbeSchedule)  # only its schedule, no model
    schedule.cfg, schedule.steps = cfg.probes, cfg.train.steps
    window = [s for s in range(int(EARLY * cfg.train.steps)) if schedule._landscape_due(s)]
    assert len(window) >= MIN_EARLY_PROBES, (scale, model, window)
    later = [s for s in range(int(EARLY * cfg.train.steps), cfg.train.steps) if schedule._landscape_due(s)]
    assert all(s % cfg.probes.every == 0 for s in later)  # dense early only, not everywhere


@pytest.mark.parametrize("overrides", [
    ["experiment=figure3", "scale=smoke", "model=dln,vgg", "norm=none,batch", "optim.lr_factor=1,0.1", "seed=0,1"],
    ["experiment=figure1", "norm=none,batch", "optim.lr=0.1,0.5", "seed=0", "norm=batch,l1"],  # a key given twice
    ["model=dln", "seed=3"],
])
def test_sweep_expansion_matches_hydras_basic_sweeper(overrides):
    # Hydra's own expansion, the reference: what `bnlab-train -m` runs (private API, so only here)
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    reference = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)[0]
    assert expand(overrides) == reference


@pytest.mark.parametrize("name", ["figure3", "lp-training"])
def test_a_sweep_composed_once_per_configuration_equals_composing_every_seed(name):
    """sweep() composes each configuration once and sets its seeds before resolving: the same configs as
    composing each job with its seed=<s> override."""
    from omegaconf import OmegaConf

    from experiments.lib.runs import sweep

    cfgs = sweep(name, "smoke", 3, ["train.steps=7"])
    params = compose([f"experiment={name}", "scale=smoke"], with_hydra=True).hydra.sweeper.params
    jobs = expand([f"experiment={name}", "scale=smoke", "train.steps=7", *[f"{k}={v}" for k, v in params.items()],
                   "seed=0,1,2"])
    assert len(cfgs) == len(jobs)
    for cfg, job in zip(cfgs, jobs, strict=True):
        assert OmegaConf.to_container(cfg) == OmegaConf.to_container(compose(job))


def test_defaults_follow_the_spec():
    cfg = compose()
    assert (cfg.model.depth, cfg.model.width, cfg.data.num_samples) == (25, 10, 1000)
    assert cfg.optim.lr == pytest.approx(1e-6) and cfg.optim.momentum == 0 and cfg.train.steps == 10000
    assert cfg.norm.kind == "none" and not cfg.norm.noise.enabled
    noisy = compose(["norm=noisy_batch"]).norm
    assert noisy.kind == "batch" and noisy.noise.enabled
    assert dict(noisy.noise.constants) == {"n_mu": 0.5, "n_sigma": 1.25, "r_mu": 0.1, "r_sigma": 0.1}
    assert compose(["scale=smoke"]).train.steps < cfg.train.steps


def test_run_key_ignores_runtime_and_lr_spelling():
    a = compose(["optim.lr_factor=0.1"])
    b = compose(["optim.lr=1e-7", "runtime.progress=false", "runtime.runs_dir=/elsewhere", "logger=none"])
    assert run_key(a) == run_key(b)
    assert run_key(a) != run_key(compose(["optim.lr=1e-7", "seed=1"]))


@pytest.mark.parametrize("override, key", [
    ("optim.lr=0", "optim.lr"),
    ("optim.lr=-0.1", "optim.lr"),
    ("train.steps=0", "train.steps"),
    ("probes.ics.layers=[9,26]", "probes.ics.layers"),
    ("probes.activations.layers=[0]", "probes.activations.layers"),
    ("probes.every=0", "probes.every"),
    ("probes.landscape.multipliers.spacing=cubic", "probes.landscape.multipliers.spacing"),
    ("train.dtype=float16", "train.dtype"),
    ("norm.noise.constants.n_sigma=0.5", "norm.noise.constants.n_sigma"),
    ("data.loss=l1", "data.loss"),
    ("data.target_spectrum=flat", "data.target_spectrum"),
    ("norm.noise.enabled=yes", "norm.noise.enabled"),
    ("probes.ics.enabled=1", "probes.ics.enabled"),
    ("model.bias=1", "model.bias"),
    ("runtime.device=tpu", "runtime.device"),
    ("runtime.channels_last=sometimes", "runtime.channels_last"),
    ("runtime.compile=maybe", "runtime.compile"),
    ("runtime.tf32=1", "runtime.tf32"),
    ("runtime.tf32=fast", "runtime.tf32"),
    ("runtime.deterministic=sometimes", "runtime.deterministic"),
    ("runtime.cudnn_benchmark=fast", "runtime.cudnn_benchmark"),
])
def test_invalid_values_name_key_value_and_allowed(override, key):
    with pytest.raises(ConfigError) as err:
        validate(compose([override]))
    assert err.value.key == key
    message = str(err.value)
    assert key in message and "allowed" in message


def test_cli_rejects_bad_input_before_training(tmp_path):
    env_runs = f"runtime.runs_dir={tmp_path}"
    bad_value = subprocess.run([sys.executable, "-m", "bnlab.cli.train", "optim.lr=-1", env_runs],
                               capture_output=True, text=True, timeout=120)
    assert bad_value.returncode != 0 and "optim.lr=-1" in bad_value.stderr and "positive" in bad_value.stderr
    bad_group = subprocess.run([sys.executable, "-m", "bnlab.cli.train", "norm=weird", env_runs],
                               capture_output=True, text=True, timeout=120)
    assert bad_group.returncode != 0 and "norm/weird" in bad_group.stderr and "linf" in bad_group.stderr
    assert not any(Path(tmp_path).rglob("metrics.parquet"))


def test_figure_cli_rejects_unknown_figure_and_missing_runs(tmp_path, capsys):
    from experiments.cli import main

    with pytest.raises(SystemExit):
        main(["figure99"])
    assert "unknown figure 'figure99'" in capsys.readouterr().err
    code = main(["figure3", "--scale", "smoke", f"runtime.runs_dir={tmp_path}", "--out", str(tmp_path / "res")])
    assert code == 2 and "not in the store yet" in capsys.readouterr().err


def test_resolved_config_is_plain_yaml():
    cfg = compose(["scale=smoke"])
    text = OmegaConf.to_yaml(cfg)
    assert "${" not in text and "hydra" not in cfg


def test_tf32_by_default_for_vgg_and_never_for_the_dln():
    from bnlab.config import tf32

    assert tf32(compose(["model=vgg"])) and not tf32(compose(["model=dln"]))
    assert tf32(compose(["model=dln", "runtime.tf32=true"])) and not tf32(compose(["model=vgg", "runtime.tf32=false"]))


def test_deterministic_cuda_turns_the_cudnn_benchmark_off():
    from bnlab.config import cuda_settings

    assert cuda_settings(compose()) == {"tf32": False, "deterministic": True, "cudnn_benchmark": False}  # the DLN
    fast = cuda_settings(compose(["model=vgg", "runtime.deterministic=false"]))
    assert fast == {"tf32": True, "deterministic": False, "cudnn_benchmark": True}


def test_a_key_added_with_plus_is_refused_unless_it_is_ones_own_under_ext():
    for override in ("+train.stepz=100", "++optim.lrr=0.1"):
        with pytest.raises(ConfigError, match=r"an existing key, set without \+ \(check its spelling\).*\+ext\."):
            compose([override])
    mine = compose(["+ext.note=warmup"])
    assert mine.ext.note == "warmup" and run_key(mine) != run_key(compose())  # part of the run's identity
    done = subprocess.run([sys.executable, "-m", "bnlab.cli.train", "+train.stepz=100", "logger=none"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "train.stepz" in done.stderr and "Traceback" not in done.stderr


def test_ctrl_c_checkpoints_and_ends_with_one_line(tmp_path):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "bnlab.cli.train", "scale=smoke", "train.steps=1000000",
                             "runtime.checkpoint_every=100", "logger=none", f"runtime.runs_dir={tmp_path}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob("smoke/*/checkpoint.pt")) and time.time() < deadline:  # training
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    assert "bnlab-train: scale=smoke model=dln norm=none optim.lr=1e-06 seed=0, 1,000,000 steps ->" in err
    assert err.strip().splitlines()[-1].startswith("bnlab-train: interrupted; the run checkpointed")
    summary = json.loads(next(tmp_path.glob("smoke/*/summary.json")).read_text())
    assert summary["status"] == "interrupted" and summary["steps_completed"] > 100


def test_an_experiments_sweep_skips_the_combinations_it_names(runs_dir, capsys):
    """experiment=normalizers sweeps both models over six normalizers and skips the one the DLN refuses:
    bnlab-figure's sweep leaves it out, and bnlab-train's job for it says so and trains nothing. Neither
    sweep_skips nor the figure's name is part of a run's identity."""
    from bnlab.cli.train import main as train_main
    from bnlab.config import identity, skipped_in_sweep

    cfgs = sweep("normalizers", "smoke", 1)
    pairs = [(c.model.name, c.norm.kind) for c in cfgs]
    assert len(pairs) == 11 and ("dln", "batch_after_relu") not in pairs and ("vgg", "batch_after_relu") in pairs
    refused = compose(["experiment=normalizers", "scale=smoke", "model=dln", "norm=batch_after_relu"])
    assert skipped_in_sweep(refused) == "model.name=dln, norm.kind=batch_after_relu"
    assert skipped_in_sweep(compose(["scale=smoke", "model=dln", "norm=batch"])) is None
    assert "sweep_skips" not in identity(cfgs[0])
    argv = sys.argv
    sys.argv = ["bnlab-train", "experiment=normalizers", "scale=smoke", "model=dln", "norm=batch_after_relu",
                f"runtime.runs_dir={runs_dir}", "hydra.run.dir=" + str(runs_dir / "hydra"), "logger=none"]
    try:
        train_main()
    finally:
        sys.argv = argv
    assert "skipped model.name=dln, norm.kind=batch_after_relu: experiment normalizers leaves it out" in \
        capsys.readouterr().err
    assert not (runs_dir / "smoke").exists()
