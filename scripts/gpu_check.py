"""`make gpu-check`: the first thing to run on a new GPU machine (about 5 minutes on one GPU).

    python scripts/gpu_check.py     # needs CUDA and CIFAR-10 (BNLAB_DATA); writes results/bench/<gpu>.json

1. The machine: driver, torch's CUDA build, compute mode, memory, compute capability.
2. The `gpu` tests (tests/test_gpu.py): one training step of every model and normalization against the
   CPU's, and runs interrupted on CUDA resuming to identical metrics.
3. 200 steps of the full-width VGG16 with every probe on: step time and peak memory, alone and two at once
   (as `--pack 2` / `--jobs 2` run them).
4. Kill-and-resume trials on CUDA (scripts/kill_resume_trials.py): SIGKILLed at random moments, resumed,
   compared with an uninterrupted run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
VGG_STEPS = 200
VGG = ["model=vgg", "scale=paper", f"train.steps={VGG_STEPS}", "probes.every=100", "probes.hessian.enabled=true",
       "probes.theorems.enabled=true", f"data.eval.every={VGG_STEPS}", "logger=none", "runtime.device=cuda",
       "runtime.progress=false"]


def machine() -> dict:
    from bnlab.util.devices import compute_modes, driver_version

    props = torch.cuda.get_device_properties(0)
    return {"gpu": props.name, "capability": f"{props.major}.{props.minor}",
            "memory_gb": round(props.total_memory / 2**30, 1), "driver": driver_version(),
            "cuda_build": torch.version.cuda, "torch": torch.__version__, "compute_modes": compute_modes(),
            "gpus_visible": torch.cuda.device_count()}


def gpu_tests() -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"], cwd=ROOT,
                          capture_output=True, text=True)
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", done.stdout)}
    print(done.stdout[-3000:], flush=True)
    return {**counts, "returncode": done.returncode, "seconds": round(time.perf_counter() - started, 1)}


def one_run(overrides: list[str]) -> dict:
    """Train one run in this process; its speed and the GPU memory it peaked at."""
    from bnlab.config import compose
    from bnlab.store import read_summary
    from bnlab.training.runner import run

    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    summary = read_summary(run(compose(overrides)))
    return {"status": summary["status"], "steps_per_s": summary["steps_per_s"],
            "wall_s": round(time.perf_counter() - started, 1),
            "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def vgg_runs(runs_dir: Path, norms: list[str]) -> list[dict]:
    """The full-width VGG with every probe, one process per norm, all at once."""
    procs = [subprocess.Popen([sys.executable, __file__, "--one-run", *VGG, f"norm={norm}",
                               f"runtime.runs_dir={runs_dir}/{'-'.join(norms)}"], stdout=subprocess.PIPE, text=True)
             for norm in norms]
    outputs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"gpu-check: a VGG run failed (exit codes {[p.returncode for p in procs]})")
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


def main() -> int:
    from bnlab.util.devices import DeviceError, resolve_device

    if sys.argv[1:2] == ["--one-run"]:
        print(json.dumps(one_run(sys.argv[2:])), flush=True)
        return 0
    try:
        resolve_device("cuda")
    except DeviceError as exc:
        print(f"gpu-check: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    report = {"machine": machine()}
    print(json.dumps(report["machine"], indent=1), flush=True)
    report["gpu_tests"] = gpu_tests()
    with tempfile.TemporaryDirectory() as tmp:
        alone = vgg_runs(Path(tmp), ["batch"])[0]
        packed = vgg_runs(Path(tmp), ["batch", "none"])
    report["vgg16_full_width_every_probe"] = {
        "steps": VGG_STEPS, "alone": alone, "packed_two": packed,
        "packed_over_alone_step_time": round(alone["steps_per_s"] / packed[0]["steps_per_s"], 2)}
    print(json.dumps(report["vgg16_full_width_every_probe"], indent=1), flush=True)
    sys.path.insert(0, str(ROOT / "scripts"))
    from kill_resume_trials import main as trials

    identical, killed = trials(2, ["runtime.device=cuda"])
    report["kill_resume"] = {"identical": identical, "killed": killed}
    report["seconds"] = round(time.perf_counter() - started, 1)
    slug = re.sub(r"[^a-z0-9]+", "-", report["machine"]["gpu"].lower()).strip("-")
    out = ROOT / "results" / "bench" / f"{slug}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    ok = report["gpu_tests"]["returncode"] == 0 and identical == killed
    print(f"gpu-check: {'passed' if ok else 'FAILED'} in {report['seconds']:.0f} s; wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
