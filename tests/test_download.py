"""CIFAR-10 arriving by itself: torchvision's download, for real, from an HTTP server on the loopback address
serving a tiny archive in torchvision's layout (torchvision's URL and md5s pointed at it)."""

import hashlib
import http.server
import socket
import tarfile
import threading

import pytest
import torch
from conftest import TRAIN_PER_CLASS, write_torchvision_batches

from bnlab.data.cifar10 import DataError
from bnlab.data.datasets import cifar10


class _Archive(http.server.BaseHTTPRequestHandler):
    payload = b""
    truncate = False  # announce the whole archive, send half of it, hang up

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload[:len(self.payload) // 2] if self.truncate else self.payload)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def archive_server(tmp_path, monkeypatch):
    """A server of a tiny cifar-10-python.tar.gz; torchvision's CIFAR10 URL and md5s point at it."""
    from torchvision.datasets import CIFAR10

    source = tmp_path / "source"
    md5 = write_torchvision_batches(source)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    handler = type("Handler", (_Archive,), {"payload": archive.read_bytes()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(CIFAR10, "url", f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz")
    monkeypatch.setattr(CIFAR10, "tgz_md5", hashlib.md5(handler.payload).hexdigest())
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    yield handler
    server.shutdown()
    server.server_close()


def test_missing_data_is_downloaded_with_progress_and_checked(archive_server, tmp_path, capfd):
    root = tmp_path / "data"
    data = cifar10.load(root, "auto", tmp_path / "cache", download=True)
    assert data["source"] == "torchvision"
    assert data["train_x"].shape == (10 * TRAIN_PER_CLASS, 3, 32, 32) and data["train_x"].dtype == torch.uint8
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]  # no archive, no staging folder
    progress = capfd.readouterr().err
    assert "100%" in progress and "B/s" in progress  # torchvision's tqdm bar, in bytes
    # present now: a second load neither downloads nor decodes again
    archive_server.payload = b"gone"
    assert torch.equal(cifar10.load(root, "auto", tmp_path / "cache", download=True)["test_x"], data["test_x"])


def test_truncated_transfer_is_rejected_and_leaves_nothing(archive_server, tmp_path):
    archive_server.truncate = True
    root = tmp_path / "data"
    with pytest.raises(DataError, match="incomplete or corrupted") as err:
        cifar10.prepare(root, "auto", tmp_path / "cache", download=True)
    assert "run again" in str(err.value)
    assert not root.exists()  # no half archive, no half-unpacked folder, not even the folder it made
    assert not (tmp_path / "cache").exists()
    root.mkdir()  # a folder that was there stays, empty
    with pytest.raises(DataError, match="incomplete or corrupted"):
        cifar10.prepare(root, "auto", tmp_path / "cache", download=True)
    assert list(root.iterdir()) == []


def test_server_down_gives_the_offline_message(archive_server, tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(CIFAR10, "url", f"http://127.0.0.1:{port}/cifar-10-python.tar.gz")
    root = tmp_path / "data"
    with pytest.raises(DataError) as err:
        cifar10.prepare(root, "auto", tmp_path / "cache", download=True)
    message = str(err.value)
    for needed in ("CIFAR-10 not found", str(root / "cifar-10-batches-py"), "offline", "cifar10-jpeg.tar.gz",
                   "data=cifar10_jpeg", "BNLAB_DATA", "data.download=false"):
        assert needed in message
    assert not root.exists()


def test_no_download_when_told_not_to(archive_server, tmp_path):
    with pytest.raises(DataError, match="Downloads are off"):
        cifar10.prepare(tmp_path / "data", "auto", tmp_path / "cache", download=False)
    assert not (tmp_path / "data").exists()


def test_a_slow_server_times_out_as_offline(archive_server, tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    monkeypatch.setattr(CIFAR10, "url", f"http://127.0.0.1:{silent.getsockname()[1]}/cifar-10-python.tar.gz")
    try:
        with pytest.raises(DataError, match="offline"):
            cifar10.download(tmp_path / "data", timeout=0.5)
    finally:
        silent.close()
    assert socket.getdefaulttimeout() is None  # the process-wide default restored
