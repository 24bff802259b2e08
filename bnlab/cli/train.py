"""`bnlab-train`: one run, or a Hydra sweep of runs (each its own job; on SLURM, a task of one job array).

    bnlab-train model=dln norm=l1 optim.lr=1e-6 seed=2        # one run
    bnlab-train -m experiment=lp-landscape-dln scale=smoke    # the sweep behind one figure

With BNLAB_DRY_RUN=1 in the environment it checks each run (config, data) and says where it would go.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from bnlab import store
from bnlab.config import (
    CONFIG_DIR,
    ConfigError,
    check_overrides,
    compose,
    dry_run,
    norm_label,
    resolved,
    skipped_in_sweep,
    validate,
)
from bnlab.data import cifar10
from bnlab.data.cifar10 import DataError
from bnlab.launch.local import train_together
from bnlab.launch.slurm import listed_runs
from bnlab.store.checkpoint import CheckpointError
from bnlab.training.runner import run
from bnlab.util.devices import DeviceError


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    try:
        check_overrides(HydraConfig.get().overrides.task)
        skipped = skipped_in_sweep(cfg)
        if skipped:  # a job of an experiment's sweep that the experiment leaves out (a model refuses its norm)
            print(f"bnlab-train: skipped {skipped}: experiment {cfg.experiment_name} leaves it out (sweep_skips)",
                  file=sys.stderr)
            return
        if dry_run():
            _dry_run(cfg)
        elif cfg.runtime.get("run_list"):
            train_together(listed_runs(cfg))
        else:
            _announce(resolved(cfg))
            run(cfg)
    except (ConfigError, DataError, DeviceError, CheckpointError) as exc:  # each says what is wrong, how to fix it
        print(f"bnlab-train: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # the run has checkpointed at the step it was in (bnlab.training.loop)
        print("bnlab-train: interrupted; the run checkpointed and resumes where it stopped when started again",
              file=sys.stderr)
        sys.exit(130)


def _announce(cfg: DictConfig) -> None:
    """Say what is about to train, the scale included (the default is the paper's), and warn first when a
    run of hours would train on a CPU (a full-width VGG16), where scale=smoke takes minutes."""
    from bnlab.launch.costs import SLOW_ON_CPU_SECONDS, estimated_seconds
    from bnlab.launch.plan import duration
    from bnlab.util.devices import resolve_device

    validate(cfg)
    print(f"bnlab-train: scale={cfg.scale.name} model={cfg.model.name} norm={norm_label(cfg)} "
          f"optim.lr={cfg.optim.lr:g} "
          f"seed={cfg.seed}, {cfg.train.steps:,} steps -> {store.run_dir(cfg)}", file=sys.stderr, flush=True)
    if resolve_device(cfg.runtime.device).type == "cpu" and estimated_seconds(cfg) > SLOW_ON_CPU_SECONDS:
        print(f"bnlab-train: warning: this run trains on the CPU (no GPU here) for about "
              f"{duration(estimated_seconds(cfg))}. scale=smoke trains a smaller one in minutes; Ctrl-C stops "
              f"this one (checkpointed).", file=sys.stderr, flush=True)


def _dry_run(cfg: DictConfig) -> None:
    """Check the run (config, data) and say where it would go, without training it."""
    configs = [OmegaConf.create(c) for c in listed_runs(cfg)] if cfg.runtime.get("run_list") else [resolved(cfg)]
    for c in configs:
        validate(c)
        data = f"; would {cifar10.check(c.data.root, c.data.source, c.data.download, c.data.sha256)}" \
            if c.data.name == "cifar10" else ""
        done = store.is_finished(store.find_run(c))
        print(f"dry run: {'finished already' if done else 'would train'} {store.run_dir(c)}{data}", flush=True)


def _without_launcher(argv: list[str]) -> list[str]:
    """For a dry run: check that the launcher's overrides compose, then drop them, so that Hydra's basic
    launcher runs each job of the sweep here (as a dry run) instead of submitting it."""
    launcher = [a for a in argv if a.startswith(("hydra/launcher=", "hydra.launcher."))]
    if launcher:
        try:
            compose(launcher, with_hydra=True)
        except Exception as exc:  # Hydra's composition errors name the bad group or key
            if not type(exc).__module__.startswith(("hydra", "omegaconf")):
                raise
            print(f"bnlab-train: {exc}", file=sys.stderr)
            sys.exit(2)
        print(f"dry run: the launcher ({' '.join(launcher)}) composes; its jobs are checked here instead",
              flush=True)
    return [a for a in argv if a not in launcher]


def main() -> None:
    if dry_run():
        sys.argv = [sys.argv[0], *_without_launcher(sys.argv[1:])]
    _hydra_main()


if __name__ == "__main__":
    main()
