"""`make bench`: bnlab against the straightforward implementation, side by side in one process.

Each item times bnlab's code and a reference written here, the code a careful user would write without
bnlab (it is used nowhere else), interleaved over several repetitions so that both see the same machine
load; the medians and their ratio (ours / reference) go to results/bench/<machine>.json.

    ics_probe          ICS over every layer of VGG16. Reference: per layer, copy the model, load the mixed
                       parameters, full forward and backward. Target ratio <= 0.6.
    landscape_probe    the landscape along the gradient at 8 multipliers. Reference: per multiplier, a copied
                       model with the stepped parameters, full forward and backward. Target <= 1.0 on CPU,
                       <= 0.6 on GPU.
    curvature_probe    the Hessian's top eigenvalue (VGG16 with BatchNorm, batch statistics) by Lanczos.
                       Reference: power iteration on torch.autograd.functional.hvp of a copied model.
                       Reported: seconds and Hessian-vector products of each. Target ratio < 1.
    spectrum_density   the Hessian's eigenvalue density by stochastic Lanczos quadrature (VGG16 with BatchNorm,
                       running statistics: eval mode, where both apply), 30 Lanczos steps, one run. Reference:
                       PyHessian's hessian(...).density(iter=30, n_v=1) on the same model and batch. Reported:
                       seconds of each and the extreme Ritz values each finds. Target ratio <= 1.
    vgg16_training     images per second of VGG16 training at batch 128. Reference: torchvision's CIFAR10
                       through a DataLoader (ToTensor, Normalize), each batch copied to the device, eager
                       model. Target >= 3x on GPU.
    bn_dln_step_ms     one BatchNorm DLN step: bnlab's loop vs a plain eager loop (scripts/bench_dln.py).
    paper_bn_dln_run_with_probes_every_50_s
                       one paper-scale BatchNorm DLN run with every probe, end to end.
    dln_8_seeds        8 seeds of that run trained together (one stacked model, bnlab.training.stacking) vs one after
                       another. Target >= 4x on CPU.
    cifar10_to_device  a VGG run's data setup: CIFAR-10 standardized onto the device. Reference: the
                       per-channel formula applied elementwise in float64, then cast and copied.
    vgg16_paper_run    the VGG runs of `make reproduce-all SCALE=paper SEEDS=3`, costed: a plain step, a probe
                       step, the step after it and an evaluation timed for each normalization; steps per
                       second, FLOPs per step, the fraction of the GPU's datasheet peak; each run's time
                       predicted from its schedule, checked against a shorter run trained end to end.
    vgg16_packed       several VGG16 runs trained at once on one device (--jobs, --pack) vs one alone.
    vgg16_seeds_stacked
                       3 seeds of VGG16 trained as one model (torch.func's vmap over stacked parameters, or
                       grouped convolutions), each step checked against the separate models' losses, vs the
                       3 one after another: is stacking VGG seeds worth building, as it was for the DLN?
    reproduce_all_paper_seeds3_estimate
                       not an item: written when vgg16_paper_run (at full width) and dln_8_seeds are in the
                       file; the VGG runs' predicted time over the packing speedup, plus the DLN runs in
                       stacks of 8. Target: 15 minutes on one H200.

VGG16 is at width 1/8 on a CPU and full width on a GPU (--width). The VGG items need CIFAR-10 under
$BNLAB_DATA and are skipped without it.

    python scripts/bench.py [--repeats 5] [--only ics_probe,landscape_probe] [--width 1]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from bnlab import probes
from bnlab.config import probes_enabled, tf32
from bnlab.launch.costs import predicted_seconds, step_kinds
from bnlab.models.vgg import VGG
from bnlab.probes import curvature as probes_curvature

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


# ------------------------------------------------------------------------------------ curvature probe

def reference_top_eigenvalue(model, x, y, tolerance: float, iterations: int) -> tuple[float, int]:
    """The Hessian's top eigenvalue the straightforward way: power iteration (as PyHessian does) with
    torch.autograd.functional.hvp on a copied model, each product a forward and a double backward of its
    own. Stops when the estimate changes by less than `tolerance` relative. Returns (value, products)."""
    copied = copy.deepcopy(model)
    names = [n for n, _ in copied.named_parameters()]
    params = tuple(p.detach() for p in copied.parameters())

    def loss(*values):
        return F.cross_entropy(torch.func.functional_call(copied, dict(zip(names, values, strict=True)), (x,)), y)

    g = torch.Generator().manual_seed(0)
    v = [torch.randn(p.shape, generator=g).to(p.device) for p in params]
    value = None
    for product in range(1, iterations + 1):
        norm = torch.sqrt(sum((t * t).sum() for t in v))
        v = [t / norm for t in v]
        _, hv = torch.autograd.functional.hvp(loss, params, tuple(v))
        new = float(sum((a * b).sum() for a, b in zip(v, hv, strict=True)))
        v = list(hv)
        if value is not None and abs(new - value) <= tolerance * abs(value):
            return new, product
        value = new
    return value, iterations


def bench_curvature(device, width, repeats):
    """The Hessian's top eigenvalue of VGG16 with BatchNorm (train mode) at one batch: bnlab's Lanczos on
    one retained graph against power iteration on copied-model Hessian-vector products, both to a relative
    tolerance of 1e-3."""
    model, (x, y) = vgg16(device, width), probe_inputs(device)
    found = {}

    def ours():
        found["ours"] = probes.hessian_eigenvalues(model, F.cross_entropy, x, y, k=1, tolerance=1e-3, iterations=100)

    def reference():
        model.train()
        found["reference"] = reference_top_eigenvalue(model, x, y, 1e-3, 100)

    result = side_by_side(ours, reference, device, repeats)
    return {**result, "ours_hvps": found["ours"]["hvps"], "reference_hvps": found["reference"][1],
            "ours_eigenvalue": round(found["ours"]["eigenvalues"][0], 4),
            "reference_eigenvalue": round(found["reference"][0], 4), "target": "ratio < 1"}


def bench_spectrum(device, width, repeats):
    """SLQ in eval mode (PyHessian's density() calls model.eval()) on one batch: bnlab's hessian_spectrum
    against PyHessian's density, each 30 Lanczos steps from one Rademacher start."""
    try:
        from pyhessian import hessian as pyhessian_hessian
    except ImportError as exc:
        raise Skipped("PyHessian is not installed (pip install pyhessian; it is in the dev extras)") from exc
    model, (x, y) = vgg16(device, width), probe_inputs(device)
    found = {}

    def ours():
        found["ours"] = probes.hessian_spectrum(model, F.cross_entropy, x, y, mode="eval", iterations=30, runs=1)

    torch.eig = probes_curvature.legacy_eig  # PyHessian 0.1 calls torch.eig, which torch removed in 1.9

    def reference():
        state = copy.deepcopy(model.state_dict())
        computer = pyhessian_hessian(model, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=device.type == "cuda")
        found["reference"] = computer.density(iter=30, n_v=1)
        model.load_state_dict(state)
        model.train()

    result = side_by_side(ours, reference, device, repeats)
    ritz, reference_ritz = found["ours"]["ritz_values"][0], [float(v) for v in found["reference"][0][0]]
    return {**result, "ours_hvps": found["ours"]["hvps"], "ours_extremes": [round(min(ritz), 4), round(max(ritz), 4)],
            "reference_extremes": [round(min(reference_ritz), 4), round(max(reference_ritz), 4)],
            "target": "ratio <= 1"}


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


class Skipped(Exception):
    """An item that cannot run on this machine; main records why."""


def cifar10_here() -> dict:
    """CIFAR-10 from $BNLAB_DATA (decoded once into $BNLAB_CACHE), as the runs' config finds it."""
    from bnlab.data.datasets import cifar10

    try:
        return cifar10.load(os.environ.get("BNLAB_DATA", "data"), "auto", os.environ.get("BNLAB_CACHE", "cache"))
    except cifar10.DataError as exc:
        raise Skipped(f"no CIFAR-10 here ({str(exc).splitlines()[0]})") from None


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

    from bnlab.config import compose
    from bnlab.training.loop import Trainer

    data = cifar10_here()
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
                       "data.train_subset=null", f"runtime.runs_dir={tmp}/runs",
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


# ------------------------------------------------------------------------- VGG seeds as one model

class GroupedVGG(torch.nn.Module):
    """S VGG16s (one per seed) as one network of grouped convolutions: seed s owns channel group s of every
    layer, its batch enters as input channels 3s..3s+2, and its logits leave as group s of the output. Only
    for this measurement: it holds exactly the S models' parameters (copied in), so one step of it is S steps
    of theirs."""

    def __init__(self, models: list[VGG]):
        super().__init__()
        s = self.seeds = len(models)
        layers = []
        for block in zip(*(m.features for m in models), strict=True):
            if isinstance(block[0], torch.nn.MaxPool2d):
                layers.append(torch.nn.MaxPool2d(2))
                continue
            conv = block[0].conv
            grouped = torch.nn.Conv2d(conv.in_channels * s, conv.out_channels * s, 3, padding=1, groups=s,
                                      bias=conv.bias is not None)
            norm = torch.nn.Identity() if isinstance(block[0].norm, torch.nn.Identity) else \
                torch.nn.BatchNorm2d(conv.out_channels * s)
            _copy_groups(grouped, [b.conv for b in block]), _copy_groups(norm, [b.norm for b in block])
            layers += [grouped, norm, torch.nn.ReLU()]
        self.features = torch.nn.Sequential(*layers)
        head = []
        for parts in zip(*(m.classifier for m in models), strict=True):  # 512-512-10: hidden blocks, output layer
            linears = [getattr(p, "linear", p) for p in parts]
            grouped = torch.nn.Conv1d(linears[0].in_features * s, linears[0].out_features * s, 1, groups=s,
                                      bias=linears[0].bias is not None)
            with torch.no_grad():
                grouped.weight.copy_(torch.cat([lin.weight for lin in linears])[..., None])
                if grouped.bias is not None:
                    grouped.bias.copy_(torch.cat([lin.bias for lin in linears]))
            head.append(grouped)
            if hasattr(parts[0], "norm"):
                norm = torch.nn.Identity() if isinstance(parts[0].norm, torch.nn.Identity) else \
                    torch.nn.BatchNorm1d(linears[0].out_features * s)
                _copy_groups(norm, [p.norm for p in parts])
                head += [norm, torch.nn.ReLU()]
        self.head = torch.nn.Sequential(*head)

    def forward(self, x):  # x: (batch, 3 S, 32, 32) -> (batch, S, classes)
        return self.head(self.features(x).flatten(1)[..., None])[..., 0].unflatten(1, (self.seeds, -1))


def _copy_groups(grouped, parts) -> None:
    with torch.no_grad():
        for name, tensor in grouped.named_parameters():
            tensor.copy_(torch.cat([getattr(p, name) for p in parts]))


def bench_vgg_seeds_stacked(device, width, repeats, seeds: int = 3, steps: int = 5):
    """`seeds` VGG16 seeds trained as one model against one after another: an SGD step each on its own batch
    of 128, standard and BatchNorm, in channels-last. Two ways to stack: torch.func (stack_module_state, one
    vmapped gradient) and grouped convolutions (GroupedVGG). Each stacked step is checked against the separate
    models' losses first."""

    out = {"machine": machine()[1], "seeds": seeds, "width": width, "steps_per_repeat": steps}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(seeds, BATCH, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (seeds, BATCH), generator=g).to(device)
    for norm in ("none", "batch"):
        out[norm] = _seeds_stacked(norm, device, width, repeats, steps, x, y)
    return out


def _seeds_stacked(norm, device, width, repeats, steps, x, y) -> dict:
    from torch.func import functional_call, grad_and_value, stack_module_state, vmap

    seeds, layout = x.shape[0], torch.channels_last
    models = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        models.append(VGG("vgg16", width, norm).to(device, memory_format=layout))
    grouped = GroupedVGG(models).to(device, memory_format=layout)
    xg = x.permute(1, 0, 2, 3, 4).reshape(BATCH, seeds * 3, 32, 32).contiguous(memory_format=layout)
    xs = [x[s].contiguous(memory_format=layout) for s in range(seeds)]
    separate = torch.tensor([float(F.cross_entropy(m(xs[s]), y[s])) for s, m in enumerate(models)])
    together = F.cross_entropy(grouped(xg).transpose(1, 2), y.T, reduction="none").mean(0)
    assert torch.allclose(together.detach().cpu(), separate, rtol=1e-4), (together, separate)

    params, buffers = stack_module_state([copy.deepcopy(m) for m in models])
    base = copy.deepcopy(models[0]).to("meta")

    def loss_of(p, b, xb, yb):
        return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    step_grads = vmap(grad_and_value(loss_of), randomness="different")
    assert torch.allclose(step_grads(params, buffers, x, y)[1].detach().cpu(), separate, rtol=1e-4)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.01) for m in models]
    grouped_opt = torch.optim.SGD(grouped.parameters(), lr=0.01)

    def one_after_another():
        for _ in range(steps):
            for m, opt, xb, yb in zip(models, optimizers, xs, y, strict=True):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(m(xb), yb).backward()
                opt.step()

    def with_grouped_convolutions():
        for _ in range(steps):
            grouped_opt.zero_grad(set_to_none=True)
            F.cross_entropy(grouped(xg).transpose(1, 2), y.T, reduction="none").mean(0).sum().backward()
            grouped_opt.step()

    def with_vmap():
        for _ in range(steps):
            grads, _ = step_grads(params, buffers, x, y)
            with torch.no_grad():
                torch._foreach_add_(list(params.values()), list(grads.values()), alpha=-0.01)

    timed_ = {label: side_by_side(fn, one_after_another, device, repeats)
              for label, fn in (("grouped_convolutions", with_grouped_convolutions), ("torch_func_vmap", with_vmap))}
    return {"one_after_another_s": timed_["grouped_convolutions"]["reference_s"],
            **{f"{k}_s": v["ours_s"] for k, v in timed_.items()},
            **{f"speedup_{k}": round(v["reference_s"] / v["ours_s"], 2) for k, v in timed_.items()}}


# ------------------------------------------------------------------------- CIFAR-10 onto the device

def bench_cifar10_to_device(device, repeats):
    """A run's data setup: the 50,000 training and 10,000 test images standardized per channel onto the
    device. Reference: float64 pixels, their per-channel mean and std, the formula applied elementwise,
    cast and copied. Ours: bnlab.data.datasets.ImageClassification (channel histograms, a 256-entry table)."""
    from bnlab.data.datasets import ImageClassification

    data = cifar10_here()

    def reference():
        pixels = data["train_x"].double() / 255
        mean, std = pixels.mean((0, 2, 3)).view(1, 3, 1, 1), pixels.std((0, 2, 3)).view(1, 3, 1, 1)
        return [((x.double() / 255 - mean) / std).float().to(device) for x in (data["train_x"], data["test_x"])]

    def ours():
        return ImageClassification(data, BATCH, 0, None, True, 10000, None, device, torch.float32)

    same = torch.equal(reference()[0], ours().train_x)
    return {**side_by_side(ours, reference, device, repeats), "identical_float32_images": same}


# --------------------------------------------------------------------- paper-scale VGG16 run, costed

# Datasheet dense peaks in TFLOP/s (TF32 tensor cores, plain FP32) of the GPUs this was meant for; the
# fraction of peak is left out on other devices.
PEAK_TFLOPS = {"H200": (494.7, 66.9), "H100": (494.7, 66.9), "A100": (156.0, 19.5)}


def peak_tflops(device, tf32: bool) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (tensor_core, plain) in PEAK_TFLOPS.items():
        if key in name:
            return tensor_core if tf32 else plain
    return None


def step_flops(trainer, step: int) -> int:
    """FLOPs of one training step (convolutions and matrix products, forward and backward, as torch's flop
    counter counts them; normalization, ReLU and the update are a small remainder it leaves out)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer.step(step)
    return counter.get_total_flops()


def paper_runs(model: str, overrides: list[str]) -> list:
    """The `model` runs `make reproduce-all SCALE=paper SEEDS=3` trains into an empty store (bnlab-figure's
    plan), with `overrides`."""
    from bnlab.launch.plan import plan
    from experiments import figure_names
    from experiments.lib.runs import sweep

    cfgs = [c for name in figure_names() for c in sweep(name, "paper", 3, overrides) if c.model.name == model]
    return list(plan(cfgs)[3].values())


def variant(cfg) -> str:
    """What sets a VGG run's cost per step: its normalization (with or without noise)."""
    return cfg.norm.kind + ("+noise" if cfg.norm.noise.enabled else "")


def measure_costs(cfg, device, repeats: int, directory: Path) -> tuple[dict, int]:
    """Seconds of each part of the run `cfg` (step_kinds; its probes on): setup and first step once, the
    others medians over `repeats`, timed through bnlab's Trainer; and the FLOPs of one plain step."""
    from bnlab.training.loop import Trainer

    def seconds(fn):
        sync(device)
        started = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - started

    trainers = []
    setup = seconds(lambda: trainers.append(Trainer(cfg, directory)))
    trainer = trainers[0]
    first = seconds(lambda: trainer.step(0))
    trainer.step(1)
    flops = step_flops(trainer, 2)
    every, eval_every = cfg.probes.every, cfg.data.eval.every
    plain = iter(s for s in range(3, 10**9) if s % every > 1 and s % eval_every)
    probe_steps = iter(range(every, 10**9, every))
    samples = {"setup": [setup], "first": [first], "plain": [], "probe": [], "after": [], "evaluations": []}
    for _ in range(repeats):
        samples["plain"].append(seconds(lambda: [trainer.step(next(plain)) for _ in range(20)]) / 20)
        s = next(probe_steps)
        samples["probe"].append(seconds(lambda s=s: trainer.step(s)))
        samples["after"].append(seconds(lambda s=s: trainer.step(s + 1)))
        samples["evaluations"].append(seconds(lambda s=s: trainer.evaluate(s)))
        trainer.rows.flush()
    return {k: statistics.median(v) for k, v in samples.items()}, flops


def bench_vgg_paper_run(device, width, repeats, e2e_steps: int):
    """The VGG runs of a paper-scale reproduction (all 50,000 images, every probe every 100 steps,
    evaluation on 20,000 images every 250), costed by kind of step: a plain step, a probe step, the step
    after it (activations again) and an evaluation, timed through bnlab's Trainer for each normalization.
    From them: steps per second, the FLOP rate and the fraction of the GPU's peak (BatchNorm), each 15k-step
    run, all of them one after another, and a check of the costing against a shorter BatchNorm run trained
    end to end."""
    from bnlab.training.runner import run

    cifar10_here()
    with tempfile.TemporaryDirectory() as tmp:
        runs = paper_runs("vgg", [f"scale.vgg.width={width}", f"runtime.runs_dir={tmp}/runs", "logger=none",
                                  "runtime.progress=false", f"runtime.threads={torch.get_num_threads()}"])
        costs, flops = {}, {}
        for cfg in sorted(runs, key=lambda c: not probes_enabled(c)):  # a probed run of each variant if any
            if variant(cfg) not in costs:
                costs[variant(cfg)], flops[variant(cfg)] = measure_costs(cfg, device, repeats,
                                                                         Path(tmp) / variant(cfg))
        bn = next(c for c in runs if variant(c) == "batch" and probes_enabled(c))
        short = OmegaConf.merge(bn, {"train": {"steps": e2e_steps}, "runtime": {"runs_dir": f"{tmp}/e2e"}})
        started = time.perf_counter()
        run(short)
        e2e_s = time.perf_counter() - started
    step_s = costs["batch"]["plain"]
    peak = peak_tflops(device, tf32(bn))
    achieved = flops["batch"] / step_s / 1e12
    per_run = [predicted_seconds(c, costs[variant(c)]) for c in runs]
    return {
        "width": width, "batch": BATCH, "tf32": tf32(bn) if device.type == "cuda" else None,
        "batchnorm": {"train_step_ms": round(step_s * 1e3, 3), "steps_per_s": round(1 / step_s, 1),
                      "gflop_per_step": round(flops["batch"] / 1e9, 2), "achieved_tflops": round(achieved, 3),
                      "peak_tflops_datasheet": peak, "fraction_of_peak": round(achieved / peak, 3) if peak else None,
                      "paper_run_step_kinds": step_kinds(bn),
                      "paper_run_predicted_s": round(predicted_seconds(bn, costs["batch"]), 1)},
        "costs_ms": {v: {k: round(t * 1e3, 2) for k, t in c.items()} for v, c in costs.items()},
        "end_to_end_batchnorm": {"steps": e2e_steps, "measured_s": round(e2e_s, 1),
                                 "predicted_s": round(predicted_seconds(short, costs["batch"]), 1)},
        "reproduce_all_vgg": {"runs": len(runs), "one_after_another_predicted_s": round(sum(per_run)),
                              "longest_run_predicted_s": round(max(per_run))},
    }


def _packed_worker(container: dict, steps: int, barrier, seconds) -> None:
    from bnlab.training.loop import Trainer

    cfg = OmegaConf.create(container)
    trainer = Trainer(cfg, Path(cfg.runtime.runs_dir) / f"packed-{os.getpid()}")
    for step in range(1, 4):  # warm-up, past the evaluation at step 0
        trainer.step(step)
    sync(trainer.device)
    barrier.wait()  # all start together
    started = time.perf_counter()
    for step in range(4, 4 + steps):
        trainer.step(step)
        if len(trainer.rows.pending) > 200:
            trainer.rows.flush()
    sync(trainer.device)
    seconds.put(time.perf_counter() - started)


def bench_vgg_packed(device, width, steps: int, pack: int):
    """Filling a device: `pack` BatchNorm VGG16 runs trained at once, each in a process of its own (what
    `--jobs` and `--pack` do), against one alone: total steps per second, and their ratio."""
    from multiprocessing import get_context

    from bnlab.config import compose

    cifar10_here()
    context = get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(["model=vgg", "norm=batch", f"model.width={width}", "probes=none", "logger=none",
                       f"runtime.runs_dir={tmp}", "runtime.progress=false",
                       f"runtime.threads={torch.get_num_threads()}"])
        container = OmegaConf.to_container(cfg, resolve=True)

        def rate(processes: int) -> float:
            barrier, seconds = context.Barrier(processes), context.Queue()
            workers = [context.Process(target=_packed_worker, args=(container, steps, barrier, seconds), daemon=True)
                       for _ in range(processes)]  # daemons: ended with this process if it stops
            for w in workers:
                w.start()
            times = []
            while len(times) < processes:
                try:
                    times.append(seconds.get(timeout=5))
                except queue.Empty:
                    failed = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                    if failed:  # a worker died (its traceback is above): stop rather than wait forever
                        raise RuntimeError(f"vgg16_packed: a training process failed (exit code {failed[0]})") from None
            for w in workers:
                w.join()
            return processes * steps / max(times)

        alone, packed = rate(1), rate(pack)
    return {"runs_at_once": pack, "steps_per_run": steps, "one_run_steps_per_s": round(alone, 1),
            "packed_total_steps_per_s": round(packed, 1), "speedup": round(packed / alone, 2)}


def reproduce_all_estimate(result: dict) -> dict | None:
    """`make reproduce-all SCALE=paper SEEDS=3` from the measured items: the VGG runs' predicted time
    (vgg16_paper_run) shortened by the measured packing speedup (vgg16_packed), and the DLN runs trained
    in stacks of 8 seeds, one stack at a time (dln_8_seeds, the stacked variant with 1 thread)."""
    vgg, packed, dln = result.get("vgg16_paper_run"), result.get("vgg16_packed"), result.get("dln_8_seeds")
    if not vgg or "skipped" in vgg or vgg.get("width") != 1.0 or not dln:
        return None
    speedup = packed["speedup"] if packed and "speedup" in packed else 1.0
    vgg_s = vgg["reproduce_all_vgg"]["one_after_another_predicted_s"] / speedup
    dln_runs = len(paper_runs("dln", []))
    dln_s = dln_runs / dln["seeds"] * dln["stacked_1_thread_s"]
    return {"vgg_runs": vgg["reproduce_all_vgg"]["runs"], "vgg_packing_speedup": speedup, "vgg_s": round(vgg_s),
            "dln_runs": dln_runs, "dln_s": round(dln_s), "total_s": round(vgg_s + dln_s),
            "target_s": 900}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated items (default: all)")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--width", type=float, default=None, help="VGG16 width (default: 1 on a GPU, 1/8 on a CPU)")
    parser.add_argument("--end-to-end-steps", type=int, default=300,
                        help="steps of the run vgg16_paper_run trains end to end to check its costing")
    parser.add_argument("--pack", type=int, default=None, help="runs at once in vgg16_packed (default: 4 on a "
                        "GPU, the number of cores on a CPU)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)  # as a run trains (runtime.threads); leaves the cores to parallel runs
    width = args.width or (1.0 if device.type == "cuda" else 0.125)
    args.pack = args.pack or (4 if device.type == "cuda" else os.cpu_count() or 1)
    items = {
        "ics_probe": lambda: bench_ics(device, width, args.repeats),
        "landscape_probe": lambda: bench_landscape(device, width, args.repeats),
        "curvature_probe": lambda: bench_curvature(device, width, min(args.repeats, 3)),
        "spectrum_density": lambda: bench_spectrum(device, width, min(args.repeats, 3)),
        "vgg16_training": lambda: bench_vgg_training(device, width, args.repeats, 100 if device.type == "cuda" else 10),
        "cifar10_to_device": lambda: bench_cifar10_to_device(device, min(args.repeats, 3)),
        "vgg16_paper_run": lambda: bench_vgg_paper_run(device, width, args.repeats, args.end_to_end_steps),
        "vgg16_packed": lambda: bench_vgg_packed(device, width, 200 if device.type == "cuda" else 20, args.pack),
        "vgg16_seeds_stacked": lambda: bench_vgg_seeds_stacked(device, width, args.repeats),
        "bn_dln_step_ms": lambda: bench_dln.step_comparison(args.repeats),
        "paper_bn_dln_run_with_probes_every_50_s": bench_dln.paper_run_seconds,
        "dln_8_seeds": bench_dln.seeds_together,
    }
    chosen = [i for i in args.only.split(",") if i] or list(items)
    name, description = machine()
    out = args.out / f"{name}.json"
    result = json.loads(out.read_text()) if out.exists() else {}
    result.setdefault("machine", description)  # the machine of the items without one of their own (older runs)
    result.update({"torch": torch.__version__, "python": sys.version.split()[0], "vgg16_width": width})
    for item in chosen:
        print(f"{item} ...", flush=True)
        try:
            result[item] = {**items[item](), "machine": description}  # the file gathers items run on other days
        except Skipped as exc:
            result[item] = {"skipped": str(exc)}
        print(json.dumps(result[item]), flush=True)
    estimate = reproduce_all_estimate(result)
    if estimate:
        result["reproduce_all_paper_seeds3_estimate"] = estimate
        print(json.dumps(estimate), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
