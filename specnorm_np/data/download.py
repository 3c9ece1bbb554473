"""Download and unpack the CIFAR-10 archive, never leaving a half-written file behind.

* :func:`download_file` streams a URL into a temporary file *in the destination folder*, checks
  its size and MD5, and only then renames it into place with :func:`os.replace` (atomic on one
  file system). Any failure removes the temporary file.
* :func:`extract_archive` unpacks a tar archive into a temporary folder inside the target, checks
  every member first (no absolute paths, no ``..`` escaping the target, no links pointing outside,
  no devices), extracts with :mod:`tarfile`'s ``"data"`` filter where Python has it (3.10.12+,
  3.11.4+, 3.12+), and moves the result into place when everything was extracted.
* :func:`download_cifar10` combines both for the official ``cifar-10-python.tar.gz``.

The URL, MD5 and size default to the module constants below, read at call time, so tests (or a
mirror) can point them elsewhere.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from urllib.request import urlopen

from specnorm_np.data.errors import ChecksumError, DatasetError, DownloadError

__all__ = [
    "CIFAR10_URL", "CIFAR10_MD5", "CIFAR10_SIZE", "ARCHIVE_NAME", "FOLDER_NAME",
    "file_md5", "download_file", "extract_archive", "download_cifar10",
]

#: The official address of the CIFAR-10 python version (Krizhevsky, 2009).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
#: MD5 of that archive, as published on the CIFAR-10 page.
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
#: Its size in bytes.
CIFAR10_SIZE = 170_498_071
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"

_CHUNK = 1 << 20
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


def file_md5(path: str | os.PathLike[str]) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(
    url: str,
    destination: str | os.PathLike[str],
    *,
    md5: str | None = None,
    size: int | None = None,
    quiet: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Fetch ``url`` into ``destination``; the file appears only once it is complete and verified.

    Parameters
    ----------
    url : str
    destination : path
        Final file name; its folder is created if needed.
    md5 : str or None
        Expected hex MD5; ``None`` skips the check.
    size : int or None
        Expected size in bytes; ``None`` trusts the server's ``Content-Length`` (if any).
    quiet : bool
        Hide the progress bar.

    Raises
    ------
    DownloadError
        The connection failed or ended early; nothing was written at ``destination``.
    ChecksumError
        Size or MD5 differ from the expected ones; the download was discarded.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".part", dir=destination.parent
    )
    received = 0
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(handle, "wb") as output, urlopen(url, timeout=timeout) as response:
            announced = response.headers.get("Content-Length")
            announced = int(announced) if announced is not None else None
            if size is not None and announced is not None and announced != size:
                raise ChecksumError(
                    f"{url}: the server announces {announced} bytes, expected {size}; "
                    "this is not the expected file (check the URL)"
                )
            total = size if size is not None else announced
            from tqdm.auto import tqdm

            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"downloading {destination.name}", disable=quiet) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    output.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    if total is not None and received > total:
                        raise ChecksumError(
                            f"{url}: received more than the expected {total} bytes; "
                            "this is not the expected file (check the URL)"
                        )
        if total is not None and received != total:
            raise DownloadError(
                f"download of {url} was interrupted: received {received} of {total} bytes. "
                f"Nothing was kept at {destination}; run again to retry."
            )
        found = digest.hexdigest()
        if md5 is not None and found != md5.lower():
            raise ChecksumError(
                f"{url}: MD5 of the downloaded file is {found}, expected {md5}; the file was "
                "discarded. Retry; if it persists, the server or a proxy serves a different file."
            )
        os.replace(temporary, destination)
    except (OSError, http.client.HTTPException) as error:
        raise DownloadError(
            f"download of {url} failed after {received} bytes ({type(error).__name__}: {error}). "
            f"Nothing was kept at {destination}; check the network and run again to retry, or "
            f"fetch the file by hand and put it at {destination}."
        ) from error
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return destination


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def check_member(member: tarfile.TarInfo, target: str, archive: str) -> None:
    """Refuse a tar member that would write or point outside ``target`` (a real path).

    Paths are compared after normalisation (``os.path.realpath``) against the real target, so
    ``a/../../x`` and absolute names are caught. Symbolic links are resolved relative to the
    member's folder, hard links relative to the archive root, as tar does.
    """
    name = member.name
    where = f"{archive}: member '{name}'"
    if os.path.isabs(name) or name.startswith(("/", "\\")):
        raise DatasetError(f"{where} has an absolute path; refused (archive may be malicious)")
    destination = os.path.realpath(os.path.join(target, name))
    if not _inside(destination, target):
        raise DatasetError(
            f"{where} would be written outside the target folder {target} (path traversal); "
            "refused, nothing from this archive was kept"
        )
    if member.issym() or member.islnk():
        if os.path.isabs(member.linkname):
            base = ""
        elif member.issym():
            base = os.path.dirname(destination)
        else:
            base = target
        pointed = os.path.realpath(os.path.join(base, member.linkname))
        if not _inside(pointed, target):
            raise DatasetError(
                f"{where} is a link to '{member.linkname}', outside the target folder {target}; "
                "refused, nothing from this archive was kept"
            )
        if not _HAS_DATA_FILTER:
            raise DatasetError(
                f"{where} is a link; this Python's tarfile has no 'data' filter, so links are "
                "refused (CIFAR-10 archives contain none)"
            )
    elif not (member.isfile() or member.isdir()):
        raise DatasetError(f"{where} is a device, FIFO or other special file; refused")


def extract_archive(
    archive: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    expect: str | None = None,
    quiet: bool = False,
) -> Path:
    """Unpack ``archive`` into ``target`` through a temporary folder.

    Parameters
    ----------
    archive : path
        A tar file (any compression :mod:`tarfile` reads).
    target : path
        Folder receiving the archive's top-level entries; none of them may exist yet.
    expect : str or None
        A top-level folder the archive must contain (e.g. ``"cifar-10-batches-py"``).

    Returns
    -------
    Path
        ``target / expect`` when ``expect`` is given, else ``target``.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".extracting-", dir=target)
    staging_real = os.path.realpath(staging)
    try:
        try:
            from tqdm.auto import tqdm

            with tarfile.open(archive, "r:*") as tar, tqdm(
                desc=f"extracting {archive.name}", unit=" files", disable=quiet
            ) as bar:
                for member in tar:
                    check_member(member, staging_real, str(archive))
                    if _HAS_DATA_FILTER:
                        tar.extract(member, staging_real, filter="data")
                    else:  # pragma: no cover - old Pythons only
                        tar.extract(member, staging_real)
                    bar.update(1)
        except (tarfile.TarError, EOFError, OSError) as error:
            raise DatasetError(
                f"{archive}: cannot be extracted ({type(error).__name__}: {error}); it is "
                "truncated, corrupt or unsafe. Delete it and download it again."
            ) from error
        entries = sorted(os.listdir(staging))
        if expect is not None and not os.path.isdir(os.path.join(staging, expect)):
            raise DatasetError(
                f"{archive}: expected a top-level folder '{expect}', found {entries}"
            )
        for entry in entries:
            if (target / entry).exists():
                raise DatasetError(
                    f"{archive}: '{entry}' already exists in {target}; not overwritten. "
                    "Remove it first to extract again."
                )
        for entry in entries:
            os.replace(os.path.join(staging, entry), target / entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / expect if expect is not None else target


def download_cifar10(
    root: str | os.PathLike[str],
    *,
    url: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    quiet: bool = False,
) -> Path:
    """Make ``root / "cifar-10-batches-py"`` exist, downloading and extracting when needed.

    An archive already at ``root / "cifar-10-python.tar.gz"`` is reused when its size and MD5
    match. ``url``, ``md5`` and ``size`` default to :data:`CIFAR10_URL`, :data:`CIFAR10_MD5` and
    :data:`CIFAR10_SIZE` (looked up when called).

    Returns
    -------
    Path
        The folder holding the batches.
    """
    root = Path(root).expanduser()
    folder = root / FOLDER_NAME
    if folder.is_dir():
        return folder
    url = CIFAR10_URL if url is None else url
    md5 = CIFAR10_MD5 if md5 is None else md5
    size = CIFAR10_SIZE if size is None else size
    archive = root / ARCHIVE_NAME
    reusable = (
        archive.is_file()
        and (size is None or archive.stat().st_size == size)
        and (md5 is None or file_md5(archive) == md5.lower())
    )
    if not reusable:
        download_file(url, archive, md5=md5, size=size, quiet=quiet)
    return extract_archive(archive, root, expect=FOLDER_NAME, quiet=quiet)
