"""CIFAR-10 from either of its two sources, decoded once into a uint8 tensor cache.

Sources (`data.source`), looked for under `data.root`:
- `torchvision`: torchvision's `cifar-10-batches-py/`, downloaded by torchvision into `data.root` when it is
  missing (unless `data.download` is false); the archive's md5 is checked before it is unpacked, and every
  file's before it is unpickled. The download is unpacked beside its destination and moved into place only
  once complete and checked, so an interrupted or corrupted transfer leaves nothing behind.
- `jpeg`: the JPEG copy's layout `cifar10-jpeg/{train,test}/<class>/NNNN.jpg`, as an unpacked folder or as
  `cifar10-jpeg.tar.gz` (its sha256 checked against `data.sha256` before it is opened, when one is given).
- `auto`: torchvision's files when present, else the JPEG copy when present, else torchvision (download).

The cache (`<cache_dir>/cifar10-<source>-<sha256 of the source>.pt`) holds the decoded images as uint8
(N, 3, 32, 32) tensors and the labels. It is written to a temporary file and renamed into place, with a
sidecar holding its own sha256, which is checked before the cache is loaded: an interrupted or damaged
cache is rebuilt, never half-read.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import logging
import re
import shutil
import socket
import tarfile
import tempfile
import urllib.error
from pathlib import Path

import numpy as np
import torch

from bnlab.util.files import atomic_write

log = logging.getLogger("bnlab")

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TORCHVISION_FOLDER = "cifar-10-batches-py"
JPEG_FOLDER = "cifar10-jpeg"
JPEG_ARCHIVE = "cifar10-jpeg.tar.gz"
SOURCES = ("auto", "torchvision", "jpeg")
_JPEG_NAME = re.compile(r"^(?:\./)?cifar10-jpeg/(train|test)/([a-z]+)/(\d+)\.jpg$")


class DataError(RuntimeError):
    """Missing, corrupted or unexpected dataset files; the message says what and how to fix it."""


def _sha256(paths: list[Path], names: list[str] | None = None) -> str:
    digest = hashlib.sha256()
    for i, path in enumerate(paths):
        if names is not None:
            digest.update(names[i].encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def resolve_source(root: Path, source: str) -> str:
    """The concrete source `auto` stands for under `root`."""
    if source != "auto":
        return source
    if (root / TORCHVISION_FOLDER).is_dir():
        return "torchvision"
    if (root / JPEG_FOLDER).is_dir() or (root / JPEG_ARCHIVE).is_file():
        return "jpeg"
    return "torchvision"


DOWNLOAD_TIMEOUT = 60.0  # seconds without a byte before a download counts as failed (an offline machine)


def _missing(root: Path, looked_for: list[str], extra: str) -> DataError:
    where = "\n  ".join(str(root / name) for name in looked_for)
    return DataError(f"CIFAR-10 not found. Looked for:\n  {where}\n{extra}\nSet the location with data.root=DIR or "
                     "the BNLAB_DATA environment variable (a directory holding cifar-10-batches-py/, cifar10-jpeg/ or "
                     "cifar10-jpeg.tar.gz).")


class _TorchvisionSource:
    def __init__(self, root: Path, download: bool):
        self.root, self.download = root, download
        self.folder = root / TORCHVISION_FOLDER

    def check(self) -> None:
        if not self.folder.is_dir() and not self.download:
            raise _missing(self.root, [TORCHVISION_FOLDER, JPEG_FOLDER, JPEG_ARCHIVE],
                           "Downloads are off (data.download=false): let torchvision fetch it with "
                           "data.download=true, or use the JPEG copy with data=cifar10_jpeg.")

    def checksum(self) -> str:
        from torchvision.datasets import CIFAR10

        if not self.folder.is_dir():
            download(self.root)
        names = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list]
        missing = [n for n in names if not (self.folder / n).is_file()]
        if missing:
            raise DataError(f"{self.folder} lacks {', '.join(missing)}: the download is incomplete. Delete the folder "
                            "and run again with data.download=true.")
        return _sha256([self.folder / n for n in names], names)

    def _load(self, cls, train: bool):
        try:
            return cls(str(self.root), train=train, download=False)  # downloads go through download()
        except RuntimeError as exc:
            raise DataError(f"CIFAR-10 under {self.folder} failed torchvision's integrity check ({exc}). A file is "
                            "corrupted or incomplete: delete the folder and run again, which downloads it again "
                            "(unless data.download=false).") from exc

    def decode(self) -> dict:
        from torchvision.datasets import CIFAR10

        out = {}
        for split in ("train", "test"):
            ds = self._load(CIFAR10, train=split == "train")
            out[f"{split}_x"] = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
            out[f"{split}_y"] = torch.tensor(ds.targets, dtype=torch.int64)
        return out


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """torchvision opens its URL without a timeout; on a machine whose packets go nowhere that would hang."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def download(root: str | Path, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Fetch CIFAR-10 with torchvision (its URL, its progress bar, its md5 of the archive) into
    `root/cifar-10-batches-py`, and return that folder. The transfer and the unpacking happen in a staging
    folder under `root` that is always removed; the folder appears only once every file's md5 is right."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity, download_and_extract_archive

    root = Path(root)
    target = root / TORCHVISION_FOLDER
    created_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".cifar10-download-", dir=root))
    log.info("CIFAR-10 not found under %s: downloading it from %s", root, CIFAR10.url)
    try:
        with _socket_timeout(timeout):
            download_and_extract_archive(CIFAR10.url, staging, filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
        bad = [name for name, md5 in [*CIFAR10.train_list, *CIFAR10.test_list, (CIFAR10.meta["filename"],
                                                                               CIFAR10.meta["md5"])]
               if not check_integrity(staging / TORCHVISION_FOLDER / name, md5)]
        if bad:
            raise DataError(f"the archive downloaded from {CIFAR10.url} unpacked with wrong or missing files "
                            f"({', '.join(bad)}); nothing was kept under {root}. Run again to retry.")
        if not target.is_dir():  # another process may have finished the same download first
            staging.joinpath(TORCHVISION_FOLDER).rename(target)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        raise _missing(root, [TORCHVISION_FOLDER, JPEG_FOLDER, JPEG_ARCHIVE],
                       f"Downloading it from {CIFAR10.url} failed ({exc}): this machine looks offline. Copy "
                       f"torchvision's {TORCHVISION_FOLDER}/ there from a machine that has it, or use the JPEG copy "
                       "(cifar10-jpeg.tar.gz) with data=cifar10_jpeg; data.download=false skips the download.") \
            from exc
    except RuntimeError as exc:  # torchvision: "File not found or corrupted." (md5 of the archive)
        if isinstance(exc, DataError):
            raise
        raise DataError(f"the download from {CIFAR10.url} was incomplete or corrupted: its md5 is not "
                        f"{CIFAR10.tgz_md5} ({exc}). Nothing was kept under {root}; run again to retry.") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created_root and not any(root.iterdir()):
            root.rmdir()  # a failed download leaves no trace, not even the folder it made
    return target


class _JpegSource:
    def __init__(self, root: Path, expected_sha256: str | None):
        self.root, self.expected = root, expected_sha256
        self.folder, self.archive = root / JPEG_FOLDER, root / JPEG_ARCHIVE

    def check(self) -> None:
        if not self.folder.is_dir() and not self.archive.is_file():
            raise _missing(self.root, [JPEG_FOLDER, JPEG_ARCHIVE],
                           "The JPEG copy is cifar10-jpeg.tar.gz (or its unpacked folder); copy it there.")

    def _files(self) -> list[tuple[str, Path]]:
        return sorted((p.relative_to(self.root).as_posix(), p) for p in self.folder.rglob("*") if p.is_file())

    def checksum(self) -> str:
        if self.folder.is_dir():  # an unpacked copy wins over the archive beside it
            files = self._files()
            return _sha256([p for _, p in files], [n for n, _ in files])
        digest = _sha256([self.archive])
        if self.expected and digest != self.expected:
            raise DataError(f"{self.archive} has sha256 {digest}, expected {self.expected} (data.sha256): the "
                            "file is corrupted or not the published copy. Copy it again, or set data.sha256=null to "
                            "accept this file as it is.")
        return digest

    def _members(self):
        if self.folder.is_dir():
            for name, path in self._files():
                yield name, path.read_bytes()
            return
        try:
            with tarfile.open(self.archive, "r:gz") as tar:
                for member in tar:
                    if member.isfile():
                        yield member.name, tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{self.archive} cannot be read ({exc}): it is corrupted or truncated. "
                            "Copy it again.") from exc

    def decode(self) -> dict:
        from PIL import Image, UnidentifiedImageError

        images: dict[str, list] = {"train": [], "test": []}
        for name, data in self._members():
            match = _JPEG_NAME.match(name)
            if match is None:
                continue  # README and the like
            split, cls, index = match.groups()
            if cls not in CLASSES:
                raise DataError(f"{name}: unknown class folder {cls!r}; CIFAR-10's classes are {', '.join(CLASSES)}")
            try:
                with Image.open(io.BytesIO(data)) as img:
                    pixels = np.asarray(img.convert("RGB"))
            except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                raise DataError(f"{name} is not a readable JPEG ({exc}): the copy is corrupted; "
                                "copy it again.") from exc
            if pixels.shape != (32, 32, 3):
                raise DataError(f"{name} is {pixels.shape[1]}x{pixels.shape[0]}, not a 32x32 CIFAR-10 image")
            images[split].append((CLASSES.index(cls), int(index), pixels))
        out = {}
        for split, items in images.items():
            if not items:
                raise DataError(f"{self.folder if self.folder.is_dir() else self.archive} holds no {split} images "
                                f"(expected {JPEG_FOLDER}/{split}/<class>/NNNN.jpg)")
            items.sort(key=lambda t: (t[0], t[1]))  # class, then the original order within the class
            out[f"{split}_x"] = torch.from_numpy(np.stack([p for _, _, p in items]).transpose(0, 3, 1, 2).copy())
            out[f"{split}_y"] = torch.tensor([c for c, _, _ in items], dtype=torch.int64)
        return out


def _source(root: Path, source: str, download: bool, sha256: str | None):
    if source == "torchvision":
        return _TorchvisionSource(root, download)
    if source == "jpeg":
        return _JpegSource(root, sha256)
    raise DataError(f"data.source={source!r}; allowed: {', '.join(SOURCES)}")


def load(root: str | Path, source: str, cache_dir: str | Path, download: bool = False,
         sha256: str | None = None) -> dict:
    """{train_x, train_y, test_x, test_y, source, sha256}: uint8 (N, 3, 32, 32) images, int64 labels."""
    path, concrete, digest, src = _locate(root, source, cache_dir, download, sha256)
    data = _read_cache(path)
    if data is None:
        data = _decode_into(path, src)
    return {**data, "source": concrete, "sha256": digest}


def check(root: str | Path, source: str, download: bool = False, sha256: str | None = None) -> str:
    """Without reading or fetching anything: what `load` would do, or a DataError if it cannot work."""
    root = Path(root)
    concrete = resolve_source(root, source)
    _source(root, concrete, download, sha256).check()
    if concrete == "torchvision" and not (root / TORCHVISION_FOLDER).is_dir():
        return f"download CIFAR-10 into {root / TORCHVISION_FOLDER}"
    return f"read CIFAR-10 ({concrete}) from {root}"


def prepare(root: str | Path, source: str, cache_dir: str | Path, download: bool = False,
            sha256: str | None = None) -> None:
    """Check the dataset and fill its cache if that is missing, without loading it (runs load it later)."""
    path, _, _, src = _locate(root, source, cache_dir, download, sha256)
    if not (path.is_file() and path.with_suffix(".sha256").is_file()):
        _decode_into(path, src)


def _locate(root, source, cache_dir, download, sha256):
    """(cache path, concrete source, source sha256, source reader), after checking the source is there."""
    root = Path(root)
    concrete = resolve_source(root, source)
    src = _source(root, concrete, download, sha256)
    src.check()
    digest = src.checksum()
    return Path(cache_dir) / f"cifar10-{concrete}-{digest[:16]}.pt", concrete, digest, src


def _decode_into(path: Path, src) -> dict:
    log.info("decoding CIFAR-10 into %s; later runs read the cache", path)
    data = src.decode()
    _write_cache(path, data)
    return data


def _read_cache(path: Path) -> dict | None:
    sidecar = path.with_suffix(".sha256")
    if not path.is_file() or not sidecar.is_file():
        return None
    if _sha256([path]) != sidecar.read_text().strip():
        log.warning("cache %s does not match its checksum (damaged); rebuilding it", path)
        return None
    return torch.load(path, weights_only=True)


def _write_cache(path: Path, data: dict) -> None:
    """Data first and its checksum last, each written atomically: a cache is complete or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: torch.save(data, p))
    atomic_write(path.with_suffix(".sha256"), lambda p: p.write_text(_sha256([path])))
