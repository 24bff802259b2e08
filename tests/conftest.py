import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# The tests compare runs bit for bit as a CPU computes them, so they run on the CPU on a GPU machine too
# (runtime.device follows BNLAB_DEVICE); the tests marked gpu ask for CUDA themselves.
os.environ["BNLAB_DEVICE"] = "cpu"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    path = tmp_path / "runs"
    monkeypatch.setenv("BNLAB_RUNS", str(path))
    return path


# ------------------------------------------------------------------- tiny CIFAR-10 copies, one per format

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_PER_CLASS, TEST_PER_CLASS = 13, 2  # 130 training images: one batch of 128


def tiny_images(split: str):
    """Deterministic (label, index, uint8 HxWx3 image) triples: smooth images, so JPEG keeps them close."""
    import numpy as np

    rng = np.random.default_rng(0 if split == "train" else 1)
    count = TRAIN_PER_CLASS if split == "train" else TEST_PER_CLASS
    yy, xx = np.mgrid[0:32, 0:32]
    out = []
    for label in range(len(CLASSES)):
        for index in range(count):
            a, b, c = rng.uniform(0.05, 0.3, 3)
            img = np.stack([128 + 100 * np.sin(a * xx + b * yy + k + c * label) for k in range(3)], -1)
            out.append((label, index, img.clip(0, 255).astype(np.uint8)))
    return out


def write_jpeg_folder(root):
    from PIL import Image

    for split in ("train", "test"):
        for label, index, img in tiny_images(split):
            folder = root / "cifar10-jpeg" / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{index:04d}.jpg", quality=95)
    return root


def write_jpeg_archive(root):
    import shutil
    import tarfile

    staging = write_jpeg_folder(root / "staging")
    with tarfile.open(root / "cifar10-jpeg.tar.gz", "w:gz") as tar:
        tar.add(staging / "cifar10-jpeg", arcname="cifar10-jpeg")
    shutil.rmtree(staging)
    return root


def write_torchvision_batches(root):
    """cifar-10-batches-py/ in torchvision's pickle format; returns {file name: md5} for monkeypatching."""
    import hashlib
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train, test = tiny_images("train"), tiny_images("test")
    parts = {f"data_batch_{i + 1}": train[i::5] for i in range(5)} | {"test_batch": test}
    for name, items in parts.items():
        entry = {"data": np.stack([img.transpose(2, 0, 1).reshape(-1) for _, _, img in items]),
                 "labels": [label for label, _, _ in items]}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CLASSES)}))
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.fixture(scope="session")
def jpeg_root(tmp_path_factory):
    """A directory holding a tiny cifar10-jpeg/ folder (never written to by the code under test)."""
    return write_jpeg_folder(tmp_path_factory.mktemp("jpeg"))


@pytest.fixture
def tiny_cifar(jpeg_root, tmp_path, monkeypatch):
    """BNLAB_DATA pointing at the tiny JPEG folder, with a private cache."""
    monkeypatch.setenv("BNLAB_DATA", str(jpeg_root))
    monkeypatch.setenv("BNLAB_CACHE", str(tmp_path / "cache"))
    return jpeg_root
