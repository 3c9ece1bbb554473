"""Downloading and unpacking against a local HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from specnorm_np.data import (
    ChecksumError,
    DatasetError,
    DownloadError,
    download,
    download_cifar10,
    download_file,
    extract_archive,
    load_cifar10,
)
from specnorm_np.data.synthetic import make_archive, write_fake_cifar10

PER_BATCH = 10


class _Server:
    """Serves ``files`` (path -> bytes); ``mode`` "full" or "cut" (close half-way)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.mode = "full"
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                owner.requests += 1
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if owner.mode == "cut":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(scope="module")
def archive_bytes(tmp_path_factory):
    source = tmp_path_factory.mktemp("source")
    write_fake_cifar10(source, images_per_batch=PER_BATCH, seed=7)
    archive = make_archive(source / "cifar-10-batches-py", source / "fake.tar.gz")
    return archive.read_bytes(), source


@pytest.fixture
def server(archive_bytes):
    served = _Server()
    served.files["/cifar.tar.gz"] = archive_bytes[0]
    yield served
    served.close()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _leftovers(folder) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_download_verifies_and_renames(server, archive_bytes, tmp_path):
    body = archive_bytes[0]
    destination = tmp_path / "out" / "archive.tar.gz"
    download_file(server.url("/cifar.tar.gz"), destination, md5=_md5(body), size=len(body),
                  quiet=True)
    assert destination.read_bytes() == body
    assert _leftovers(destination.parent) == ["archive.tar.gz"]


def test_wrong_checksum_is_rejected_and_nothing_kept(server, archive_bytes, tmp_path):
    body = archive_bytes[0]
    with pytest.raises(ChecksumError, match=r"MD5 .* is [0-9a-f]{32}, expected 0{32}"):
        download_file(server.url("/cifar.tar.gz"), tmp_path / "a.tar.gz", md5="0" * 32,
                      size=len(body), quiet=True)
    with pytest.raises(ChecksumError, match=rf"announces {len(body)} bytes, expected 123"):
        download_file(server.url("/cifar.tar.gz"), tmp_path / "a.tar.gz", size=123, quiet=True)
    assert _leftovers(tmp_path) == []


def test_interrupted_transfer_leaves_nothing_and_retry_succeeds(server, archive_bytes, tmp_path):
    body = archive_bytes[0]
    destination = tmp_path / "archive.tar.gz"
    server.mode = "cut"
    with pytest.raises(DownloadError, match="Nothing was kept"):
        download_file(server.url("/cifar.tar.gz"), destination, md5=_md5(body), quiet=True)
    assert _leftovers(tmp_path) == []
    server.mode = "full"
    download_file(server.url("/cifar.tar.gz"), destination, md5=_md5(body), quiet=True)
    assert destination.read_bytes() == body and _leftovers(tmp_path) == ["archive.tar.gz"]


def test_opener_failing_mid_way_leaves_nothing_and_retry_succeeds(
        archive_bytes, tmp_path, monkeypatch):
    body = archive_bytes[0]

    class _Response(io.BytesIO):
        headers = {"Content-Length": str(len(body))}

        def __init__(self, fail: bool) -> None:
            super().__init__(body)
            self.fail = fail

        def read(self, size: int = -1) -> bytes:
            if self.fail and self.tell() > 0:
                raise ConnectionResetError("connection reset by peer")
            return super().read(min(size, 1000))

    failing = {"value": True}
    monkeypatch.setattr(download, "urlopen", lambda url, timeout: _Response(failing["value"]))
    with pytest.raises(DownloadError, match=r"failed after 1000 bytes.*ConnectionResetError"):
        download_file("http://example.invalid/x", tmp_path / "x.tar.gz", quiet=True)
    assert _leftovers(tmp_path) == []
    failing["value"] = False
    download_file("http://example.invalid/x", tmp_path / "x.tar.gz", md5=_md5(body), quiet=True)
    assert (tmp_path / "x.tar.gz").read_bytes() == body


def test_unreachable_server_is_a_download_error(tmp_path, server):
    with pytest.raises(DownloadError, match="404"):
        download_file(server.url("/missing"), tmp_path / "m.tar.gz", quiet=True)
    assert _leftovers(tmp_path) == []


def test_load_cifar10_downloads_extracts_and_loads(server, archive_bytes, tmp_path, monkeypatch):
    body, source = archive_bytes
    monkeypatch.setattr(download, "CIFAR10_URL", server.url("/cifar.tar.gz"))
    monkeypatch.setattr(download, "CIFAR10_MD5", _md5(body))
    monkeypatch.setattr(download, "CIFAR10_SIZE", len(body))
    root = tmp_path / "cache"
    loaded = load_cifar10(root, download=True, quiet=True, images_per_batch=PER_BATCH)
    expected = load_cifar10(source, images_per_batch=PER_BATCH)
    for got, want in zip((*loaded[0], *loaded[1]), (*expected[0], *expected[1])):
        np.testing.assert_array_equal(got, want)
    assert _leftovers(root) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    requests = server.requests
    load_cifar10(root, download=True, quiet=True, images_per_batch=PER_BATCH)
    assert server.requests == requests  # found locally, not fetched again


def test_existing_verified_archive_is_reused(server, archive_bytes, tmp_path):
    body = archive_bytes[0]
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(body)
    folder = download_cifar10(tmp_path, url=server.url("/cifar.tar.gz"), md5=_md5(body),
                              size=len(body), quiet=True)
    assert (folder / "data_batch_5").is_file() and server.requests == 0


def test_load_with_failing_download_keeps_nothing(server, archive_bytes, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "CIFAR10_URL", server.url("/cifar.tar.gz"))
    monkeypatch.setattr(download, "CIFAR10_MD5", "f" * 32)
    monkeypatch.setattr(download, "CIFAR10_SIZE", len(archive_bytes[0]))
    with pytest.raises(ChecksumError):
        load_cifar10(tmp_path, download=True, quiet=True, images_per_batch=PER_BATCH)
    assert _leftovers(tmp_path) == []


def _tar_with(path, members) -> None:
    """members: (TarInfo fields..., content) built by hand."""
    with tarfile.open(path, "w:gz") as tar:
        for info, content in members:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)


def _file(name: str, content: bytes = b"hello") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info, content


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize(
    "members, pattern",
    [
        ([_file("cifar-10-batches-py/ok"), _file("../escaped.txt")], "outside the target"),
        ([_file("cifar-10-batches-py/../../escaped.txt")], "outside the target"),
        ([_file("/tmp/specnorm_absolute_escape.txt")], "absolute path"),
        ([_link("cifar-10-batches-py/link", "../../escaped.txt")], "link to '../../escaped"),
        ([_link("cifar-10-batches-py/link", "/etc/passwd")], "link to '/etc/passwd'"),
        ([_link("hard", "../escaped.txt", tarfile.LNKTYPE)], "link to '../escaped"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink"],
)
def test_unsafe_archives_are_refused(tmp_path, members, pattern):
    archive = tmp_path / "evil.tar.gz"
    _tar_with(archive, members)
    target = tmp_path / "target"
    with pytest.raises(DatasetError, match=pattern):
        extract_archive(archive, target, quiet=True)
    assert _leftovers(target) == []  # staging folder removed, nothing moved in
    assert not (tmp_path / "escaped.txt").exists()
    assert _leftovers(tmp_path) == ["evil.tar.gz", "target"]


@pytest.mark.skipif(not hasattr(tarfile, "data_filter"), reason="this Python has no data filter")
def test_data_filter_alone_also_refuses_traversal(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "check_member", lambda *args: None)
    archive = tmp_path / "evil.tar.gz"
    _tar_with(archive, [_link("cifar-10-batches-py/link", "/etc/passwd")])
    with pytest.raises(DatasetError, match="cannot be extracted"):
        extract_archive(archive, tmp_path / "target", quiet=True)
    assert _leftovers(tmp_path / "target") == []


def test_links_inside_and_nested_folders_are_extracted(tmp_path):
    archive = tmp_path / "ok.tar.gz"
    _tar_with(archive, [_file("top/a/b.txt", b"data"), _link("top/c", "a/b.txt")])
    if not hasattr(tarfile, "data_filter"):
        pytest.skip("links are refused outright without tarfile's data filter")
    extract_archive(archive, tmp_path / "target", expect="top", quiet=True)
    assert (tmp_path / "target" / "top" / "c").read_bytes() == b"data"


def test_truncated_archive_and_missing_folder_are_named(archive_bytes, tmp_path):
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(archive_bytes[0][: len(archive_bytes[0]) // 2])
    with pytest.raises(DatasetError, match=r"cut\.tar\.gz: cannot be extracted"):
        extract_archive(archive, tmp_path / "t1", quiet=True)
    assert _leftovers(tmp_path / "t1") == []
    other = tmp_path / "other.tar.gz"
    _tar_with(other, [_file("something/else.txt")])
    with pytest.raises(DatasetError, match=r"expected a top-level folder 'cifar-10-batches-py'"):
        extract_archive(other, tmp_path / "t2", expect="cifar-10-batches-py", quiet=True)
    assert _leftovers(tmp_path / "t2") == []
