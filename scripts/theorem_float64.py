"""Is what is left of Theorem 4.2's exact identity float32 rounding? Measures the exact second-order
expansion (eps included) against the directional second derivative at every unit of every BatchNorm layer
of a run's starting state, once in float32 and once in float64, and prints the largest |gap| / size per
layer for each (size = |Hessian term| + |reduction term|, as the theory figure's rule divides).

    python scripts/theorem_float64.py model=dln seed=1
    python scripts/theorem_float64.py model=vgg seed=0 --units 8

The state is the one training starts from (torch.manual_seed(seed), then the data, then the model), on the
run's first batch. An identity that holds leaves float64 gaps near 1e-13 while float32 ones reach 1e-6 to
1e-4; a real deviation would be the same size in both.
"""

from __future__ import annotations

import argparse

import torch

from bnlab import probes
from bnlab.config import compose
from bnlab.data.datasets import build_data
from bnlab.models import build_model
from bnlab.training.probe_schedule import theorem_rows


def exact_gaps(result: dict) -> dict[str, float]:
    """Largest |rhs42_exact - lhs42| / (|hessian_term| + |reduction42|) per layer, as the runs log it."""
    return {name: theorem_rows(layer, tolerance=0.0)["thm42_exact_gap_max"] for name, layer in result.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=dln seed=1")
    parser.add_argument("--units", type=int, default=None, help="units per layer (default: every unit)")
    args = parser.parse_args(argv)
    cfg = compose(["experiment=curvature", "norm=batch", "logger=none", *args.overrides])
    torch.manual_seed(cfg.seed)
    data = build_data(cfg, torch.device("cpu"), torch.float32)
    model32 = build_model(cfg)
    model64 = build_model(cfg)
    model64.load_state_dict(model32.state_dict())
    model64.double()
    inputs, targets = data.train_batch(0)
    targets64 = targets if not targets.is_floating_point() else targets.double()
    units = lambda: torch.Generator().manual_seed(cfg.seed)  # noqa: E731 (the same units in both precisions)
    gaps32 = exact_gaps(probes.batchnorm_theorems(model32, data.loss, inputs, targets, args.units, units()))
    gaps64 = exact_gaps(probes.batchnorm_theorems(model64, data.loss, inputs.double(), targets64, args.units,
                                                  units()))
    print(f"{'layer':<16} {'float32':>10} {'float64':>10}")
    for name in gaps32:
        print(f"{name:<16} {gaps32[name]:>10.2e} {gaps64[name]:>10.2e}")
    print(f"{'largest':<16} {max(gaps32.values()):>10.2e} {max(gaps64.values()):>10.2e}")


if __name__ == "__main__":
    main()
