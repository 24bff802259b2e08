"""`make bench`: bnlab against the straightforward implementation, side by side in one process.

Each item times bnlab's code and a reference written here, the code a careful user would write without
bnlab (it is used nowhere else), interleaved over several repetitions so that both see the same machine
load; the medians and their ratio (ours / reference) go to results/bench/<machine>.json.

    ics_probe          ICS over every layer of VGG16. Reference: per layer, copy the model, load the mixed
                       parameters, full forward and backward. Target ratio <= 0.6.
    landscape_probe    the landscape along the gradient at 8 multipliers. Reference: per multiplier, a copied
                       model with the stepped parameters, full forward and backward. Target <= 1.0 on CPU,
                       <= 0.6 on GPU.
    vgg16_training     images per second of VGG16 training at batch 128. Reference: torchvision's CIFAR10
                       through a DataLoader (ToTensor, Normalize), each batch copied to the device, eager
                       model. Target >= 3x on GPU. Needs CIFAR-10 under $BNLAB_DATA (skipped without it).
    bn_dln_step_ms     one BatchNorm DLN step: bnlab's loop vs a plain eager loop (scripts/bench_dln.py).
    paper_bn_dln_run_with_probes_every_50_s
                       one paper-scale BatchNorm DLN run with every probe, end to end.
    dln_8_seeds        8 seeds of that run trained together (one stacked model, bnlab.stack) vs one after
                       another. Target >= 4x on CPU.

VGG16 is at width 1/8 on a CPU and full width on a GPU.

    python scripts/bench.py [--repeats 5] [--only ics_probe,landscape_probe]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bnlab import probes
from bnlab.models.vgg import VGG

sys.path.insert(0, str(Path(__file__).parent))
import bench_dln  # noqa: E402

BATCH = 128


def machine() -> tuple[str, str]:
    """(file name, description) of this machine's results."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        short = name.lower().replace("nvidia", "").strip().split()[0]
        return short, f"{name}, torch {torch.__version__}"
    return "cpu", f"{bench_dln.cpu_model()}, {os.cpu_count()} cores ({torch.get_num_threads()} torch thread)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    """Seconds for one call of `fn`, after one warm-up call."""
    fn()
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


def side_by_side(ours, reference, device, repeats: int) -> dict:
    ours_s, reference_s = [], []
    for _ in range(repeats):  # interleaved: both see the same load
        reference_s.append(timed(reference, device))
        ours_s.append(timed(ours, device))
    o, r = statistics.median(ours_s), statistics.median(reference_s)
    return {"ours_s": round(o, 5), "reference_s": round(r, 5), "ratio_ours_over_reference": round(o / r, 3)}


def vgg16(device, width):
    torch.manual_seed(0)
    return VGG("vgg16", width, "batch").to(device)


def probe_inputs(device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (BATCH,), generator=g).to(device)
    return x, y


# ------------------------------------------------------------------------------------------ ICS probe

def reference_ics(model, x, y, updated):
    """Definition 2.1 the direct way: for each layer, a copy of the model holding theta_{t+1} for every
    parameter before the layer's weight, one full forward and backward."""
    names = [n for n, _ in model.named_parameters()]
    g_t = dict(zip(names, torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters())), strict=True))
    out = {}
    for layer, _ in probes.numbered_layers(model):
        weight = f"{layer}.weight"
        before = names[:names.index(weight)]
        mixed = copy.deepcopy(model)
        state = mixed.state_dict()
        state.update({n: updated[n] for n in before})
        mixed.load_state_dict(state)
        mixed.zero_grad()
        F.cross_entropy(mixed(x), y).backward()
        g_mixed = dict(mixed.named_parameters())[weight].grad
        out[layer] = {"l2": torch.linalg.vector_norm(g_t[weight] - g_mixed),
                      "cos": F.cosine_similarity(g_t[weight].flatten(), g_mixed.flatten(), dim=0)}
    return out


def bench_ics(device, width, repeats):
    model, (x, y) = vgg16(device, width), probe_inputs(device)
    updated = {n: p.detach() - 0.1 * torch.randn_like(p) * p.detach().abs().mean() for n, p in model.named_parameters()}
    ours = probes.ics_tensors(model, F.cross_entropy, x, y, updated)
    ref = reference_ics(model, x, y, updated)
    worst = max(abs(float(ours[k]["l2"]) - float(ref[k]["l2"])) / max(float(ref[k]["l2"]), 1e-12) for k in ref)
    result = side_by_side(lambda: probes.ics_tensors(model, F.cross_entropy, x, y, updated),
                          lambda: reference_ics(model, x, y, updated), device, repeats)
    return {**result, "layers": len(ref), "max_relative_difference_l2": float(f"{worst:.2e}"), "target": "<= 0.6"}


# ------------------------------------------------------------------------------------ landscape probe

def reference_landscape(model, x, y, lr, multipliers):
    """Per multiplier: a copy of the model moved along the gradient, one full forward and backward."""
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    grad = [p.grad.detach().clone() for p in model.parameters()]
    grad_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grad]))
    losses, diffs = [], []
    for m in multipliers:
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for p, g in zip(moved.parameters(), grad, strict=True):
                p.sub_(m * lr * g)
        moved.zero_grad()
        loss = F.cross_entropy(moved(x), y)
        loss.backward()
        losses.append(loss.detach())
        diffs.append(torch.linalg.vector_norm(torch.stack([(p.grad - g).norm()
                                                           for p, g in zip(moved.parameters(), grad, strict=True)])))
    diffs = torch.stack(diffs)
    return {"loss": torch.stack(losses), "grad_diff": diffs,
            "beta": (diffs / (torch.tensor(multipliers, device=diffs.device) * lr * grad_norm)).max()}


def bench_landscape(device, width, repeats):
    model, (x, y) = vgg16(device, width), probe_inputs(device)
    multipliers = probes.landscape_multipliers(0.5, 4.0, 8, "linear")

    def ours():
        return probes.landscape_tensors(model, F.cross_entropy, x, y, 0.1, multipliers)

    def reference():
        return reference_landscape(model, x, y, 0.1, multipliers)

    a, b = ours(), reference()
    worst = float(((a["loss"] - b["loss"]).abs() / b["loss"].abs()).max())
    return {**side_by_side(ours, reference, device, repeats), "multipliers": len(multipliers),
            "max_relative_difference_loss": float(f"{worst:.2e}"),
            "target": "<= 0.6" if device.type == "cuda" else "<= 1.0"}


# ------------------------------------------------------------------------------------ VGG16 training

def torchvision_copy(data: dict, root: Path) -> None:
    """Write the training images in torchvision's CIFAR-10 format (cifar-10-batches-py/), for the
    reference's torchvision.datasets.CIFAR10."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images = data["train_x"].reshape(len(data["train_y"]), -1).numpy()  # rows of 3072 bytes, channel-major
    labels = data["train_y"].tolist()
    per = len(labels) // 5
    for i in range(5):
        with open(folder / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump({"data": images[i * per:(i + 1) * per], "labels": labels[i * per:(i + 1) * per]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(c) for c in range(10)]}, f)


def bench_vgg_training(device, width, repeats, steps: int):
    import torchvision
    from torch.utils.data import DataLoader
    from torchvision import transforms

    from bnlab import cifar10
    from bnlab.config import compose
    from bnlab.train import Trainer

    root = os.environ.get("BNLAB_DATA", "data")
    try:
        data = cifar10.load(root, "auto", os.environ.get("BNLAB_CACHE", "cache"))
    except cifar10.DataError as exc:
        return {"skipped": f"no CIFAR-10 here ({str(exc).splitlines()[0]})"}
    with tempfile.TemporaryDirectory() as tmp:
        torchvision_copy(data, Path(tmp))
        # Our copy is not byte-identical to torchvision's download, so its md5 list does not apply.
        torchvision.datasets.cifar.check_integrity = lambda *args, **kwargs: True
        dataset = torchvision.datasets.CIFAR10(tmp, train=True, transform=transforms.Compose([
            transforms.ToTensor(), transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))]))
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True, num_workers=2,
                            pin_memory=device.type == "cuda", persistent_workers=True)
        torch.manual_seed(0)
        ref_model = VGG("vgg16", width, "batch").to(device)
        ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9)
        batches = iter(loader)

        def reference():
            nonlocal batches
            for _ in range(steps):
                try:
                    x, y = next(batches)
                except StopIteration:
                    batches = iter(loader)
                    x, y = next(batches)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                ref_opt.zero_grad()
                F.cross_entropy(ref_model(x), y).backward()
                ref_opt.step()

        cfg = compose(["model=vgg", "norm=batch", f"model.width={width}", "probes=none", "logger=none",
                       "data.train_subset=null", f"data.root={root}", f"runtime.runs_dir={tmp}/runs",
                       "runtime.progress=false", f"runtime.threads={torch.get_num_threads()}"])
        trainer = Trainer(cfg, Path(tmp) / "runs" / "bench")
        counter = iter(range(10**9))

        def ours():
            for _ in range(steps):
                trainer.step(next(counter))
                if len(trainer.rows.pending) > 200:
                    trainer.rows.flush()  # as the loop does at its logging interval

        result = side_by_side(ours, reference, device, repeats)
    images = BATCH * steps
    return {"ours_images_per_s": round(images / result["ours_s"]), "reference_images_per_s":
            round(images / result["reference_s"]), "speedup": round(result["reference_s"] / result["ours_s"], 2),
            "steps_per_repeat": steps, "target": ">= 3x on GPU"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated items (default: all)")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)  # as a run trains (runtime.threads); leaves the cores to parallel runs
    width = 1.0 if device.type == "cuda" else 0.125
    items = {
        "ics_probe": lambda: bench_ics(device, width, args.repeats),
        "landscape_probe": lambda: bench_landscape(device, width, args.repeats),
        "vgg16_training": lambda: bench_vgg_training(device, width, args.repeats, 100 if device.type == "cuda" else 10),
        "bn_dln_step_ms": lambda: bench_dln.step_comparison(args.repeats),
        "paper_bn_dln_run_with_probes_every_50_s": bench_dln.paper_run_seconds,
        "dln_8_seeds": bench_dln.seeds_together,
    }
    chosen = [i for i in args.only.split(",") if i] or list(items)
    name, description = machine()
    out = args.out / f"{name}.json"
    result = json.loads(out.read_text()) if out.exists() else {}
    result.update({"machine": description, "torch": torch.__version__, "python": sys.version.split()[0],
                   "vgg16_width": width})
    for item in chosen:
        print(f"{item} ...", flush=True)
        result[item] = items[item]()
        print(json.dumps(result[item]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
