"""Find, verify and read the official CIFAR-10 python batches.

The format (Krizhevsky, 2009): the folder ``cifar-10-batches-py/`` holds ``data_batch_1`` …
``data_batch_5`` (training, 10,000 images each), ``test_batch`` (10,000) and ``batches.meta``.
Each batch is a pickled dict with ``data`` (uint8, shape (10000, 3072); a row is the red, green
then blue 32×32 plane, each row-major) and ``labels`` (10,000 ints in 0..9), plus ``batch_label``
and ``filenames``. Keys are ``bytes`` when read with ``encoding="bytes"``, which the loader uses
(it also accepts ``str`` keys).

Where the data is looked for (the first that is *set* is the only place searched):

1. the ``root`` argument;
2. the ``SPECNORM_DATA`` environment variable;
3. ``~/.cache/specnorm_np``.

Each may name either the directory that contains ``cifar-10-batches-py/`` or that folder itself.

Images per batch: the official files must have 10,000 rows (:data:`IMAGES_PER_BATCH`, checked by
default). ``images_per_batch=None`` checks only that each batch is consistent (as many rows as
labels); the tests use it for small generated batches.

Content: every official batch is checked by default against the SHA-256 of its decoded pixels and
labels (:mod:`specnorm_np.data.content`), so a damaged pixel is found whatever the pickle's
bytes; the files' MD5 (``verify=True``) is an optional, stricter check of the bytes themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from specnorm_np.data import download as _download
from specnorm_np.data.content import OFFICIAL_CONTENT_SHA256, check_content
from specnorm_np.data.errors import ChecksumError, DatasetError
from specnorm_np.data.safe_pickle import safe_load

__all__ = [
    "load_cifar10", "read_batch", "read_meta", "verify_checksums", "resolve_data_root",
    "find_cifar10_folder", "CLASS_NAMES", "TRAIN_FILES", "TEST_FILES", "META_FILE",
    "OFFICIAL_MD5", "OFFICIAL_CONTENT_SHA256", "IMAGES_PER_BATCH", "ENVIRONMENT_VARIABLE",
]

ENVIRONMENT_VARIABLE = "SPECNORM_DATA"
FOLDER_NAME = _download.FOLDER_NAME
TRAIN_FILES = tuple(f"data_batch_{index}" for index in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
IMAGES_PER_BATCH = 10_000
IMAGE_SHAPE = (32, 32, 3)
PIXELS_PER_IMAGE = 3072
NUM_CLASSES = 10
CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
#: MD5 of each file of the official distribution (the values torchvision also checks).
OFFICIAL_MD5 = {
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}

Array = np.ndarray


def default_cache() -> Path:
    """``~/.cache/specnorm_np`` (``~`` expanded when called)."""
    return Path("~/.cache/specnorm_np").expanduser()


def resolve_data_root(root: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The directory to search and where that choice came from (for messages)."""
    if root is not None:
        return Path(root).expanduser(), "the root argument"
    environment = os.environ.get(ENVIRONMENT_VARIABLE)
    if environment:
        return Path(environment).expanduser(), f"${ENVIRONMENT_VARIABLE}"
    return default_cache(), "the default cache"


def candidate_folders(base: Path) -> list[Path]:
    """Folders that may hold the batches: ``base/cifar-10-batches-py`` and ``base`` itself."""
    return [base / FOLDER_NAME, base]


def find_cifar10_folder(base: str | os.PathLike[str]) -> Path | None:
    """The folder holding the batches under ``base``, or ``None`` when there is none."""
    base = Path(base)
    if (base / FOLDER_NAME).is_dir():
        return base / FOLDER_NAME
    markers = (META_FILE, *TRAIN_FILES, *TEST_FILES)
    if base.is_dir() and any((base / name).is_file() for name in markers):
        return base
    return None


def _missing_data_error(base: Path, origin: str) -> DatasetError:
    skipped = {
        "the root argument": f"${ENVIRONMENT_VARIABLE} and the default cache were not consulted "
        "because a data root was given.",
        f"${ENVIRONMENT_VARIABLE}": "The default cache was not consulted because "
        f"${ENVIRONMENT_VARIABLE} is set.",
    }.get(origin, "")
    return DatasetError(
        f"CIFAR-10 not found in {base} ({origin}): it holds neither a folder '{FOLDER_NAME}' "
        f"nor the batch files ({META_FILE}, {', '.join(TRAIN_FILES)}, {TEST_FILES[0]}) "
        f"directly. {skipped}\n"
        "To get the data, either:\n"
        f"  - download it ({_download.CIFAR10_SIZE / 1e6:.0f} MB from {_download.CIFAR10_URL}) "
        "into that directory: add --download to the command (Python: "
        "load_cifar10(root, download=True)), or\n"
        f"  - point to an existing copy: --data-root DIR, or set {ENVIRONMENT_VARIABLE}=DIR, "
        f"where DIR contains '{FOLDER_NAME}' (Python: load_cifar10(DIR))."
    )


def _normalise_keys(mapping: dict[Any, Any]) -> dict[str, Any]:
    return {
        (key.decode("latin1") if isinstance(key, bytes) else key): value
        for key, value in mapping.items()
    }


def _load_dict(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(
            f"{path}: missing; the folder {path.parent} should contain {META_FILE}, "
            f"{', '.join(TRAIN_FILES)} and {TEST_FILES[0]}. Copy or download the data again."
        )
    try:
        content = safe_load(path)
    except OSError as error:  # e.g. PermissionError: name the file, not a traceback
        raise DatasetError(f"{path}: cannot be read ({error.strerror or error}); check that "
                           "the file and its folder are readable by this user") from None
    if not isinstance(content, dict):
        raise DatasetError(
            f"{path}: expected a pickled dict (CIFAR-10 batch format), found "
            f"{type(content).__name__}"
        )
    return _normalise_keys(content)


def read_batch(
    path: str | os.PathLike[str], *, images_per_batch: int | None = IMAGES_PER_BATCH
) -> tuple[Array, Array]:
    """Read and validate one batch file.

    Parameters
    ----------
    path : path
        ``data_batch_N`` or ``test_batch``.
    images_per_batch : int or None
        Expected number of images (10,000 for the official files); ``None`` accepts any number
        as long as ``data`` has as many rows as there are labels.

    Returns
    -------
    images : ndarray, uint8, shape (N, 32, 32, 3)
        A channels-last view of the file's ``data`` (no copy).
    labels : ndarray, int64, shape (N,)
    """
    path = Path(path)
    batch = _load_dict(path)
    missing = [key for key in ("data", "labels") if key not in batch]
    if missing:
        raise DatasetError(
            f"{path}: missing key(s) {missing}; expected 'data' and 'labels' "
            f"(found keys {sorted(batch)})"
        )
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        found = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                 else type(data).__name__)
        raise DatasetError(f"{path}: 'data' must be a uint8 array (N, 3072), found {found}")
    rows = images_per_batch if images_per_batch is not None else data.shape[0]
    if data.shape != (rows, PIXELS_PER_IMAGE):
        raise DatasetError(
            f"{path}: 'data' must have shape ({rows}, {PIXELS_PER_IMAGE}), found {data.shape}"
        )
    raw_labels = batch["labels"]
    if not isinstance(raw_labels, (list, tuple, np.ndarray)):
        raise DatasetError(f"{path}: 'labels' must be a list of ints, found "
                           f"{type(raw_labels).__name__}")
    labels = np.asarray(raw_labels)
    if labels.size and labels.dtype.kind not in "iu":
        raise DatasetError(f"{path}: 'labels' must be integers, found dtype {labels.dtype}")
    labels = labels.astype(np.int64).reshape(-1)
    if labels.shape[0] != rows or labels.ndim != 1 or len(raw_labels) != rows:
        raise DatasetError(
            f"{path}: expected {rows} labels (one per row of 'data'), found {len(raw_labels)}"
        )
    bad = (labels < 0) | (labels >= NUM_CLASSES)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DatasetError(
            f"{path}: labels must lie in 0..{NUM_CLASSES - 1}; found {int(bad.sum())} outside, "
            f"the first at index {first} (value {int(labels[first])})"
        )
    images = data.reshape(rows, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels


def read_meta(
    path: str | os.PathLike[str], *, images_per_batch: int | None = IMAGES_PER_BATCH
) -> list[str]:
    """Read ``batches.meta`` and return the ten class names (validated)."""
    path = Path(path)
    meta = _load_dict(path)
    names = meta.get("label_names")
    if not isinstance(names, (list, tuple)) or len(names) != NUM_CLASSES:
        raise DatasetError(
            f"{path}: expected 'label_names', a list of {NUM_CLASSES} names, found {names!r}"
        )
    if meta.get("num_vis", PIXELS_PER_IMAGE) != PIXELS_PER_IMAGE:
        raise DatasetError(f"{path}: 'num_vis' must be {PIXELS_PER_IMAGE}, "
                           f"found {meta['num_vis']!r}")
    cases = meta.get("num_cases_per_batch")
    if images_per_batch is not None and cases is not None and cases != images_per_batch:
        raise DatasetError(f"{path}: 'num_cases_per_batch' must be {images_per_batch}, "
                           f"found {cases!r}")
    return [name.decode("latin1") if isinstance(name, bytes) else str(name) for name in names]


def verify_checksums(
    folder: str | os.PathLike[str], expected: dict[str, str] | None = None
) -> None:
    """Compare each file's MD5 with the official one; raise listing every mismatch.

    ``expected`` defaults to :data:`OFFICIAL_MD5` (looked up when called).
    """
    folder = Path(folder)
    expected = OFFICIAL_MD5 if expected is None else expected
    mismatches = []
    for name, want in expected.items():
        path = folder / name
        if not path.is_file():
            raise DatasetError(f"{path}: missing; cannot verify its checksum")
        found = _download.file_md5(path)
        if found != want.lower():
            mismatches.append(f"  - {path}: expected MD5 {want}, found {found}")
    if mismatches:
        raise ChecksumError(
            "CIFAR-10 checksum mismatch:\n" + "\n".join(mismatches) + "\n"
            "If these files come from the official archive, they are damaged: delete the folder "
            "and download again (load_cifar10(root, download=True)). Re-distributed copies whose "
            "pickles were written anew (such as the project's shared copy) hold the same pixels "
            "and labels but different bytes; load those with verify=False (the default), which "
            "still validates every batch's keys, shapes and labels and checks the SHA-256 of "
            "its decoded pixels and labels against the official ones."
        )


def _expected_content(
    check_content: bool | dict[str, dict[str, str]], images_per_batch: int | None
) -> dict[str, dict[str, str]]:
    """The digests to check: the official ones for official-size batches (``True``), the given
    dict, or none (``False``, or generated batches of another size)."""
    if isinstance(check_content, dict):
        return check_content
    if check_content and images_per_batch == IMAGES_PER_BATCH:
        return OFFICIAL_CONTENT_SHA256
    return {}


def _read_split(
    folder: Path, names: tuple[str, ...], images_per_batch: int | None,
    expected: dict[str, dict[str, str]] | None = None,
) -> tuple[Array, Array]:
    parts = [read_batch(folder / name, images_per_batch=images_per_batch) for name in names]
    total = sum(images.shape[0] for images, _ in parts)
    images = np.empty((total, *IMAGE_SHAPE), dtype=np.uint8)
    labels = np.empty(total, dtype=np.int64)
    start = 0
    for name, (batch_images, batch_labels) in zip(names, parts):
        stop = start + batch_images.shape[0]
        images[start:stop] = batch_images
        labels[start:stop] = batch_labels
        if expected and name in expected:  # the copy is C-ordered: hashed without another copy
            check_content(folder / name, images[start:stop], labels[start:stop], expected[name])
        start = stop
    return images, labels


def load_cifar10(
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    verify: bool = False,
    quiet: bool = False,
    images_per_batch: int | None = IMAGES_PER_BATCH,
    check_content: bool | dict[str, dict[str, str]] = True,
) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
    """Load CIFAR-10 like Keras's ``cifar10.load_data()``.

    Parameters
    ----------
    root : path or None
        Directory containing ``cifar-10-batches-py/`` (or that folder itself). ``None``: the
        ``SPECNORM_DATA`` environment variable, else ``~/.cache/specnorm_np``.
    download : bool
        When the data is absent, fetch the official archive (170 MB) into that directory,
        checking its size and MD5, and unpack it.
    verify : bool
        Also check every file's MD5 against the official distribution (off by default, because
        re-distributed copies re-serialise the pickles; see :func:`verify_checksums`).
    check_content : bool or dict
        ``True`` (default): compare the SHA-256 of each official batch's decoded pixels and
        labels with :data:`OFFICIAL_CONTENT_SHA256` (skipped for generated batches whose size
        is not the official 10,000). A dict ``{file name: {"images": hex, "labels": hex}}``
        checks the files it names against it instead; ``False`` checks nothing.
    quiet : bool
        No progress bars.
    images_per_batch : int or None
        10,000 for the official files; ``None`` only checks each batch's consistency.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        ``x`` uint8 of shape (50000, 32, 32, 3) and (10000, 32, 32, 3), channels last;
        ``y`` int64 of shape (50000,) and (10000,), values 0..9 (see :data:`CLASS_NAMES`).

    Raises
    ------
    DatasetError
        Data missing (the message lists where it looked and how to get it), a file missing,
        truncated, unsafe or malformed (the message names the file).
    ChecksumError
        (a DatasetError) a batch's decoded pixels or labels differ from the expected digests,
        or, with ``verify``, a file's MD5 differs; the message names the file.
    """
    base, origin = resolve_data_root(root)
    folder = find_cifar10_folder(base)
    if folder is None:
        if not download:
            raise _missing_data_error(base, origin)
        target = base.parent if base.name == FOLDER_NAME else base
        folder = _download.download_cifar10(target, quiet=quiet)
    if verify:
        verify_checksums(folder)
    read_meta(folder / META_FILE, images_per_batch=images_per_batch)
    expected = _expected_content(check_content, images_per_batch)
    train = _read_split(folder, TRAIN_FILES, images_per_batch, expected)
    test = _read_split(folder, TEST_FILES, images_per_batch, expected)
    return train, test
