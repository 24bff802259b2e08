"""VGG calibration study (issue: the paper's baselines, calibrated): which reading of the paper's setup
makes the standard VGG16 behave like the paper's (trains from step 0 at lr 0.01 and 0.1, fails at 0.5) with
BatchNorm training at all three and ahead.

    python scripts/calibrate_vgg.py signal            # signal at initialization of every candidate, full width
    python scripts/calibrate_vgg.py train --jobs 2    # early training curves (runs in the run store; resumable)
    python scripts/calibrate_vgg.py report            # table and curves from the stored runs
    make calibrate-vgg                                # all three

    python scripts/calibrate_vgg.py train --width 0.125 --candidates literal,he_normal   # the smoke scale's width

Writes results/calibration/vgg_signal.{json,md}, vgg_training.md, vgg_curves.csv and vgg_curves_width*.png.
The runs are ordinary bnlab runs (scale=paper, VGG16 at full width, all 50,000 images, no probes), so the
study resumes where it stopped and `make reproduce-*` shares nothing with it unless the configs agree.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

# Each candidate departs from the SPEC's literal reading (glorot_uniform weights, inputs standardized per
# channel, one linear classifier, conv bias only without normalization) in what it names; every key is
# spelled out, so a candidate stays the same run whatever the defaults are.
LITERAL = {"model.init": "glorot_uniform", "data.input_scale": "standardize", "model.head": "linear",
           "model.conv_bias": "auto"}
CHANGES = {
    "literal": {},
    "glorot_normal": {"model.init": "glorot_normal"},
    "he_normal": {"model.init": "he_normal"},
    "he_uniform": {"model.init": "he_uniform"},
    "unit_inputs": {"data.input_scale": "unit"},
    "raw_inputs": {"data.input_scale": "raw"},
    "fc_head": {"model.head": "fc"},
    "he_normal_fc_head": {"model.init": "he_normal", "model.head": "fc"},
    "conv_bias": {"model.conv_bias": "true"},
}
CANDIDATES = {name: [f"{k}={v}" for k, v in {**LITERAL, **change}.items()] for name, change in CHANGES.items()}
# Trained in this order (most informative first); the rest are judged on their signal at initialization.
TRAINED = ["he_normal", "literal", "raw_inputs", "he_normal_fc_head", "unit_inputs", "he_uniform"]
LRS = (0.01, 0.1, 0.5)
NORMS = ("none", "batch")
OUT = Path("results/calibration")

# Verdict rules, written before the runs (SPEC section 8; Figs 1a and 3a). Windows are of training steps;
# a window's accuracy is the mean training-batch accuracy over it.
TRAINS_BY = (100, 200)          # "trains from step 0": mean accuracy over steps 100-200 ...
TRAINS_ABOVE = 20.0             # ... at least twice chance (the paper: 20-40% within 500 steps at lr 0.1)
FAILS_BELOW = 15.0              # "fails": every window's mean accuracy at most 15%, or a non-finite loss
WINDOWS = ((0, 50), (50, 100), (100, 200), (200, 300))


def base_overrides(steps: int, width: float = 1.0) -> list[str]:
    return ["model=vgg", "scale=paper", f"scale.vgg.width={width}", f"train.steps={steps}", "probes=none",
            "logger=none",
            f"data.eval.every={steps}", "data.eval.train_examples=2000", "data.eval.test_examples=2000"]


def configs(candidates, steps: int, width: float = 1.0, norms=NORMS, lrs=LRS):
    from bnlab.config import compose

    out = []
    for name in candidates:
        for norm in norms:
            for lr in lrs:
                out.append((name, norm, lr, compose([*base_overrides(steps, width), f"norm={norm}", f"optim.lr={lr}",
                                                     *CANDIDATES[name]])))
    return out


def signal_at_init(cfg, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Logit std, per-layer pre-activation std (the input of each ReLU) and weight-gradient norms of the
    freshly initialized model (seed 0) on one real batch, in training mode."""
    from bnlab.models import build_model
    from bnlab.probes import numbered_layers

    torch.manual_seed(cfg.seed)
    model = build_model(cfg).train()
    modules = model.activation_modules()
    acts = {}
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda _m, _i, out, n=n: acts.__setitem__(n, out.detach().std().item())) for n, name in modules.items()]
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    for h in hooks:
        h.remove()
    grads = [m.weight.grad.norm().item() for _, m in numbered_layers(model)]
    return {"logit_std": logits.detach().std().item(), "loss": loss.item(),
            "act_std": [acts[n] for n in sorted(acts)], "grad_norm": grads}


def cmd_signal(args) -> None:
    from bnlab.data.datasets import build_data

    torch.set_num_threads(args.threads)
    results = {}
    batches = {}
    for name in CANDIDATES:
        for norm in NORMS:
            (_, _, _, cfg), = [c for c in configs([name], 1) if c[1] == norm and c[2] == 0.1]
            scale = cfg.data.input_scale
            if scale not in batches:  # batch 0 of seed 0: the first batch every run of the study trains on
                batches[scale] = build_data(cfg, torch.device("cpu"), torch.float32).train_batch(0)
            results[f"{name}/{norm}"] = signal_at_init(cfg, *batches[scale])
            r = results[f"{name}/{norm}"]
            print(f"{name:18s} {norm:6s} logit std {r['logit_std']:.3g}  act std layer 13 {r['act_std'][12]:.3g}  "
                  f"grad norms {min(r['grad_norm']):.3g}-{max(r['grad_norm']):.3g}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "vgg_signal.json").write_text(json.dumps(results, indent=1))
    lines = ["# VGG16 (full width) at initialization, seed 0, on the first training batch (128 CIFAR-10 images)",
             "", "Training mode. act std: standard deviation of the input of the ReLU of conv layers #1, #7 and #13;"
             " grad: norm of the weight gradient of layers #1, #7, #13 and the output layer.", "",
             "| candidate | overrides | norm | logit std | loss | act std #1 / #7 / #13 | grad #1 / #7 / #13 / out |",
             "|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        name, norm = key.split("/")
        a, g = r["act_std"], r["grad_norm"]
        change = " ".join(f"{k}={v}" for k, v in CHANGES[name].items()) or "(SPEC)"
        lines.append(f"| {name} | {change} | {norm} | {r['logit_std']:.3g} | "
                     f"{r['loss']:.3f} | {a[0]:.3g} / {a[6]:.3g} / {a[12]:.3g} | "
                     f"{g[0]:.3g} / {g[6]:.3g} / {g[12]:.3g} / {g[-1]:.3g} |")
    (OUT / "vgg_signal.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT / 'vgg_signal.md'}")


def cmd_train(args) -> None:
    from bnlab.launch.plan import train_missing

    names = args.candidates.split(",") if args.candidates else TRAINED
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        sys.exit(f"calibrate_vgg: unknown candidate {unknown[0]!r}; choose from {', '.join(CANDIDATES)}")
    for name in names:  # candidate by candidate: a stopped study has whole candidates done
        lrs = [float(v) for v in args.lrs.split(",")]
        cfgs = [cfg for *_, cfg in configs([name], args.steps, args.width, args.norms.split(","), lrs)]
        for cfg in cfgs:
            cfg.runtime.threads = args.threads
        print(f"candidate {name}, width {args.width:g}", flush=True)
        train_missing(cfgs, args.jobs, name=f"calibrate-{name}")


def window_means(acc, steps: int) -> list[float]:
    return [float(acc[(acc.index >= a) & (acc.index < b)].mean()) for a, b in WINDOWS if b <= steps]


def cmd_report(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from bnlab import store

    rows, curves = [], []
    for name, width in [(n, w) for w in args.widths for n in CANDIDATES]:
        for cand, norm, lr, cfg in configs([name], args.steps, width):
            directory = store.find_run(cfg)
            if not store.is_finished(directory):
                continue
            summary = store.read_summary(directory)
            m = store.read_metrics(directory)
            acc = m[m.metric == "accuracy"].set_index("step")["value"]
            loss = m[m.metric == "loss"].set_index("step")["value"]
            diverged = summary["status"] == "diverged"
            means = window_means(acc, args.steps)
            window = acc[(acc.index >= TRAINS_BY[0]) & (acc.index < TRAINS_BY[1])]
            trains = not diverged and window.mean() >= TRAINS_ABOVE
            fails = diverged or max(means) <= FAILS_BELOW
            rows.append({"candidate": cand, "width": width, "norm": norm, "lr": lr, "windows": means,
                         "trains": bool(trains),
                         "fails": bool(fails), "diverged_at": summary.get("diverged_at_step"),
                         "test_acc": summary.get("final_eval_test_accuracy")})
            curves.append(pd.DataFrame({"candidate": cand, "width": width, "norm": norm, "lr": lr, "step": acc.index,
                                        "accuracy": acc.values, "loss": loss.reindex(acc.index).values}))
    if not rows:
        sys.exit("calibrate_vgg: no finished calibration runs in the store; run `calibrate_vgg.py train` first")
    OUT.mkdir(parents=True, exist_ok=True)
    pd.concat(curves).to_csv(OUT / "vgg_curves.csv", index=False, float_format="%.5g")
    lines = [f"# VGG16 early training, {args.steps} steps, seed 0 (width 1: 64-512 channels; 0.125: the smoke scale's)",
             "",
             f"Mean training-batch accuracy (%) over steps {', '.join(f'{a}-{b}' for a, b in WINDOWS)}. "
             f"Trains: mean accuracy over steps {TRAINS_BY[0]}-{TRAINS_BY[1]} >= {TRAINS_ABOVE:g}%. Fails: "
             f"non-finite loss, or every window <= {FAILS_BELOW:g}%.", "",
             "| candidate | width | norm | lr | accuracy by window | trains | fails | test acc at end |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        w = " / ".join(f"{v:.1f}" for v in r["windows"])
        div = f" (diverged at step {r['diverged_at']})" if r["diverged_at"] is not None else ""
        test = f"{r['test_acc']:.1f}" if r["test_acc"] is not None else "-"
        yes = {k: "yes" if r[k] else "no" for k in ("trains", "fails")}
        lines.append(f"| {r['candidate']} | {r['width']:g} | {r['norm']} | {r['lr']:g} | {w}{div} | {yes['trains']} | "
                     f"{yes['fails']} | {test} |")
    lines += ["", "## Against the selection rule", "",
              "Wanted (issue): standard trains at lr 0.01 and 0.1 and fails at 0.5; BatchNorm trains at all three "
              "and its accuracy is at least the standard network's in every window after the first.", ""]
    for name, width in dict.fromkeys((r["candidate"], r["width"]) for r in rows):
        mine = {(r["norm"], r["lr"]): r for r in rows if (r["candidate"], r["width"]) == (name, width)}
        name = f"{name} (width {width:g})"
        if len(mine) < len(NORMS) * len(LRS):
            lines.append(f"- {name}: {len(mine)} of {len(NORMS) * len(LRS)} runs so far")
            continue
        std_ok = mine[("none", 0.01)]["trains"] and mine[("none", 0.1)]["trains"] and mine[("none", 0.5)]["fails"]
        bn_ok = all(mine[("batch", lr)]["trains"] for lr in LRS)
        # a diverged network (nan windows) is behind any network that did not diverge
        ahead = all(not math.isnan(b) and (math.isnan(s) or b >= s) for lr in LRS
                    for b, s in zip(mine[("batch", lr)]["windows"][1:], mine[("none", lr)]["windows"][1:], strict=True))
        lines.append(f"- {name}: standard as the paper's: {'yes' if std_ok else 'no'}; BatchNorm trains at all "
                     f"three: {'yes' if bn_ok else 'no'}; BatchNorm ahead: {'yes' if ahead else 'no'}")
    (OUT / "vgg_training.md").write_text("\n".join(lines) + "\n")
    every = pd.concat(curves)
    for width in dict.fromkeys(every.width):
        _plot(every[every.width == width], OUT / f"vgg_curves_width{width:g}.png", plt, width)
    print("\n".join(lines))


def _plot(curves, path: Path, plt, width: float) -> None:
    names = list(dict.fromkeys(curves.candidate))
    colours = dict(zip(names, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    fig, axes = plt.subplots(1, len(LRS), figsize=(5 * len(LRS) + 2, 4), sharey=True,
                             constrained_layout=True)
    for ax, lr in zip(axes, LRS, strict=True):
        for (name, norm), c in curves[curves.lr == lr].groupby(["candidate", "norm"], sort=False):
            smooth = c.set_index("step")["accuracy"].rolling(20, min_periods=1).mean()
            ax.plot(smooth.index, smooth.values, color=colours[name], ls="-" if norm == "batch" else "--",
                    label=f"{name}, {'BN' if norm == 'batch' else 'standard'}")
        ax.set_title(f"VGG16 width {width:g}, lr {lr:g}")
        ax.set_xlabel("step")
    axes[0].set_ylabel("training accuracy (%), 20-step mean")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("signal", "train", "report"))
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--norms", default=",".join(NORMS), help="train: which networks (default none,batch)")
    parser.add_argument("--lrs", default=",".join(f"{v:g}" for v in LRS), help="train: learning rates (default all)")
    parser.add_argument("--width", type=float, default=1.0, help="train: channel multiplier (1.0: full width)")
    parser.add_argument("--widths", default="1,0.125", help="report: widths to tabulate (default 1,0.125)")
    parser.add_argument("--candidates", default=None, help=f"comma-separated (default: {','.join(TRAINED)})")
    args = parser.parse_args()
    args.widths = [float(w) for w in args.widths.split(",")]
    {"signal": cmd_signal, "train": cmd_train, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
