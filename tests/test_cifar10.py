"""CIFAR-10 sources, the decoded cache, and batches as the training loop draws them."""

import tarfile

import numpy as np
import pytest
import torch
from conftest import (
    CLASSES,
    TEST_PER_CLASS,
    TRAIN_PER_CLASS,
    tiny_images,
    write_jpeg_archive,
    write_jpeg_folder,
    write_torchvision_batches,
)

from bnlab.data.cifar10 import DataError
from bnlab.data.datasets import ImageClassification, augment, channel_moments, cifar10


def expected(split):
    items = tiny_images(split)
    return (torch.from_numpy(np.stack([img for _, _, img in items]).transpose(0, 3, 1, 2).copy()),
            torch.tensor([label for label, _, _ in items]))


@pytest.fixture
def torchvision_root(tmp_path, monkeypatch):
    """torchvision's format with the fixture's md5s in place of the real files' (torchvision still checks them)."""
    from torchvision.datasets import CIFAR10

    md5 = write_torchvision_batches(tmp_path / "tv")
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    return tmp_path / "tv"


def test_jpeg_folder_and_archive_decode_to_the_same_images(tmp_path):
    folder = cifar10.load(write_jpeg_folder(tmp_path / "a"), "jpeg", tmp_path / "cache")
    archive = cifar10.load(write_jpeg_archive(tmp_path / "b"), "jpeg", tmp_path / "cache", sha256=None)
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        x, y = expected(split)
        assert folder[f"{split}_x"].dtype == torch.uint8 and folder[f"{split}_x"].shape == (10 * per_class, 3, 32, 32)
        assert torch.equal(folder[f"{split}_y"], y)  # class folders map to CIFAR's label order
        assert torch.equal(folder[f"{split}_x"], archive[f"{split}_x"])
        assert (folder[f"{split}_x"].float() - x.float()).abs().mean() < 4  # lossy, but the same pictures
    assert folder["source"] == "jpeg" and folder["sha256"] != archive["sha256"]


def test_torchvision_source_gives_the_exact_pixels(torchvision_root, tmp_path):
    data = cifar10.load(torchvision_root, "torchvision", tmp_path / "cache")
    train_x, train_y = expected("train")
    order = [i for k in range(5) for i in range(k, len(train_y), 5)]  # the fixture's batch files interleave
    assert torch.equal(data["train_x"], train_x[order]) and torch.equal(data["train_y"], train_y[order])
    assert torch.equal(data["test_x"], expected("test")[0])


def test_auto_source_prefers_torchvision_files_then_the_jpeg_copy(torchvision_root, tmp_path):
    assert cifar10.resolve_source(torchvision_root, "auto") == "torchvision"
    assert cifar10.resolve_source(write_jpeg_archive(tmp_path / "j"), "auto") == "jpeg"
    assert cifar10.resolve_source(tmp_path / "empty", "auto") == "torchvision"  # where a download would go


def test_missing_dataset_says_where_it_looked_and_how_to_fix(tmp_path):
    with pytest.raises(DataError) as err:
        cifar10.load(tmp_path / "nowhere", "auto", tmp_path / "cache")
    message = str(err.value)
    for name in ("cifar-10-batches-py", "cifar10-jpeg", "cifar10-jpeg.tar.gz", "data.download=true", "BNLAB_DATA"):
        assert name in message
    with pytest.raises(DataError, match="cifar10-jpeg.tar.gz"):
        cifar10.load(tmp_path / "nowhere", "jpeg", tmp_path / "cache")


def test_corrupted_jpeg_names_the_file(tmp_path):
    root = write_jpeg_folder(tmp_path / "j")
    (root / "cifar10-jpeg" / "test" / "cat" / "0001.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="test/cat/0001.jpg is not a readable JPEG"):
        cifar10.load(root, "jpeg", tmp_path / "cache")


def test_tampered_archive_fails_its_checksum_before_it_is_opened(tmp_path, monkeypatch):
    root = write_jpeg_archive(tmp_path / "j")
    good = cifar10._sha256([root / "cifar10-jpeg.tar.gz"])
    with open(root / "cifar10-jpeg.tar.gz", "r+b") as f:
        f.seek(100)
        f.write(b"\x00" * 8)
    monkeypatch.setattr(tarfile, "open", lambda *a, **k: pytest.fail("opened an archive that failed its checksum"))
    with pytest.raises(DataError, match="expected " + good):
        cifar10.load(root, "jpeg", tmp_path / "cache", sha256=good)


def test_truncated_archive_is_a_clear_error(tmp_path):
    root = write_jpeg_archive(tmp_path / "j")
    path = root / "cifar10-jpeg.tar.gz"
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataError, match="corrupted or truncated"):
        cifar10.load(root, "jpeg", tmp_path / "cache", sha256=None)


def test_corrupted_torchvision_file_fails_before_anything_is_unpickled(torchvision_root, tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    with open(torchvision_root / "cifar-10-batches-py" / "data_batch_3", "ab") as f:
        f.write(b"tampered")
    monkeypatch.setattr(tv_cifar.pickle, "load", lambda *a, **k: pytest.fail("unpickled an unverified file"))
    with pytest.raises(DataError, match="integrity check"):
        cifar10.load(torchvision_root, "torchvision", tmp_path / "cache")


def test_cache_is_reused_keyed_by_the_source_and_kept_out_of_the_dataset(tmp_path, monkeypatch):
    root = write_jpeg_folder(tmp_path / "j")
    root.chmod(0o555)  # a read-only dataset folder must be enough
    try:
        first = cifar10.load(root, "jpeg", tmp_path / "cache")
        monkeypatch.setattr(cifar10._JpegSource, "decode", lambda self: pytest.fail("decoded again"))
        again = cifar10.load(root, "jpeg", tmp_path / "cache")
    finally:
        root.chmod(0o755)
    assert torch.equal(first["train_x"], again["train_x"])
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".pt", ".sha256"]
    assert first["sha256"][:16] in next((tmp_path / "cache").glob("*.pt")).name


def test_interrupted_cache_write_leaves_nothing_behind_and_is_rebuilt(tmp_path, monkeypatch):
    root = write_jpeg_folder(tmp_path / "j")
    real_save = torch.save

    def save_then_die(obj, f):
        real_save({"partial": torch.zeros(3)}, f)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        cifar10.load(root, "jpeg", tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []  # no partial cache, no temporary file
    monkeypatch.setattr(torch, "save", real_save)
    assert cifar10.load(root, "jpeg", tmp_path / "cache")["train_x"].shape[0] == 10 * TRAIN_PER_CLASS


def test_damaged_cache_is_rebuilt_not_read(tmp_path, monkeypatch):
    root = write_jpeg_folder(tmp_path / "j")
    good = cifar10.load(root, "jpeg", tmp_path / "cache")
    cache = next((tmp_path / "cache").glob("*.pt"))
    cache.write_bytes(cache.read_bytes()[:-100] + b"\x00" * 100)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("loaded a cache that failed its checksum"))
    rebuilt = cifar10.load(root, "jpeg", tmp_path / "cache")
    assert torch.equal(rebuilt["train_x"], good["train_x"])


def image_data(seed=0, augment_=False, subset=None, device="cpu"):
    g = torch.Generator().manual_seed(0)  # 520 distinct random images
    data = {"train_x": torch.randint(0, 256, (520, 3, 32, 32), generator=g, dtype=torch.uint8),
            "train_y": torch.randint(0, 10, (520,), generator=g), "test_x": expected("test")[0],
            "test_y": expected("test")[1]}
    return ImageClassification(data, 128, seed, subset, augment_, 100, None, torch.device(device), torch.float32)


def test_batches_depend_on_the_seed_alone_and_cover_each_epoch_once():
    a, b, other = image_data(seed=3), image_data(seed=3), image_data(seed=4)
    for step in (0, 1, 5):
        assert torch.equal(a.train_batch(step)[0], b.train_batch(step)[0])
    assert not torch.equal(a.train_batch(0)[0], other.train_batch(0)[0])
    assert a.batches_per_epoch == 520 // 128
    seen = torch.cat([a.train_batch(s)[0].flatten(1) for s in range(a.batches_per_epoch)])
    assert len(torch.unique(seen, dim=0)) == len(seen) == 512  # no image twice in one epoch


def test_a_worker_prepares_the_images_once_and_each_run_draws_its_own_batches(tmp_path, monkeypatch):
    """build_data keeps the last images it prepared (bnlab.launch.local trains run after run in one process):
    a run with the same data config reads nothing, and draws the batches a freshly built dataset would."""
    from omegaconf import OmegaConf

    from bnlab.data.datasets import build_data

    root, cache, cpu = write_jpeg_folder(tmp_path / "d"), tmp_path / "cache", torch.device("cpu")

    def cfg(seed, batch_size=16, subset=None):
        return OmegaConf.create({"data": {
            "name": "cifar10", "root": str(root), "source": "jpeg", "cache_dir": str(cache), "download": False,
            "sha256": None, "batch_size": batch_size, "seed": seed, "train_subset": subset, "augment": False,
            "input_scale": "standardize", "eval": {"train_examples": 20, "test_examples": None}}})

    real_load, loads = cifar10.load, []
    monkeypatch.setattr(cifar10, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    first = build_data(cfg(0), cpu, torch.float32)
    for step in range(first.batches_per_epoch + 1):  # into its second epoch
        first.train_batch(step)
    again, other = build_data(cfg(0), cpu, torch.float32), build_data(cfg(5, batch_size=8), cpu, torch.float32)
    assert len(loads) == 1 and again.train_x is first.train_x and other.train_x is first.train_x

    images = real_load(root, "jpeg", cache)
    for built, seed, batch_size in ((again, 0, 16), (other, 5, 8)):
        fresh = ImageClassification(images, batch_size, seed, None, False, 20, None, cpu, torch.float32)
        assert built.batches_per_epoch == fresh.batches_per_epoch
        for step in (0, 1, fresh.batches_per_epoch):
            assert all(torch.equal(a, b) for a, b in zip(built.train_batch(step), fresh.train_batch(step), strict=True))
        assert all(torch.equal(built.eval_sets[s][0], fresh.eval_sets[s][0]) for s in ("train", "test"))
    subset = build_data(cfg(0, subset=50), cpu, torch.float32)  # other images: prepared anew
    assert len(loads) == 2 and len(subset.train_y) == 50


def test_standardized_per_channel_on_the_training_images():
    data = image_data()
    mean, std = data.train_x.mean((0, 2, 3)), data.train_x.std((0, 2, 3))
    assert torch.allclose(mean, torch.zeros(3), atol=1e-5) and torch.allclose(std, torch.ones(3), atol=1e-3)
    assert len(data.eval_sets["train"][1]) == 100 and len(data.eval_sets["test"][1]) == 10 * TEST_PER_CLASS


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_standardization_by_lookup_equals_the_elementwise_formula(dtype):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (300, 3, 8, 8), generator=g, dtype=torch.uint8)
    pixels = images.double() / 255
    mean, std = channel_moments(images)
    torch.testing.assert_close(mean, pixels.mean((0, 2, 3)), rtol=1e-13, atol=0)
    torch.testing.assert_close(std, pixels.std((0, 2, 3)), rtol=1e-13, atol=0)
    data = ImageClassification({"train_x": images, "train_y": torch.zeros(300, dtype=torch.long), "test_x": images,
                                "test_y": torch.zeros(300, dtype=torch.long)}, 100, 0, None, False, 100, None,
                               torch.device("cpu"), dtype)
    elementwise = ((pixels - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)).to(dtype)
    assert torch.equal(data.train_x, elementwise) and data.train_x.dtype == dtype


def test_augmentation_is_a_padded_crop_and_flip_per_image():
    x = torch.randn(6, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    out = augment(x, g)
    # the same draws, by hand, one image at a time
    g = torch.Generator().manual_seed(0)
    dy, dx = torch.randint(0, 9, (6, 1), generator=g), torch.randint(0, 9, (6, 1), generator=g)
    flip = torch.rand(6, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(6):
        crop = padded[i, :, dy[i, 0]:dy[i, 0] + 32, dx[i, 0]:dx[i, 0] + 32]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)
    assert torch.equal(image_data(augment_=True).train_batch(2)[0], image_data(augment_=True).train_batch(2)[0])


def test_classes_match_torchvision_order():
    assert cifar10.CLASSES == CLASSES
