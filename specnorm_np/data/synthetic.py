"""Small generated copies of the CIFAR-10 python format, for tests and examples without the data.

:func:`write_fake_cifar10` writes a ``cifar-10-batches-py/`` folder with random images in the
official layout (pickled dicts with ``batch_label``, ``labels``, ``data``, ``filenames``, written
with pickle protocol 2 as the originals are, and a ``batches.meta``); :func:`make_archive` packs a
folder into a ``.tar.gz`` like ``cifar-10-python.tar.gz``. Load such a folder with
``load_cifar10(root, images_per_batch=None)`` (or the number of images per batch written).
"""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

from specnorm_np.data.cifar10 import CLASS_NAMES, META_FILE, TEST_FILES, TRAIN_FILES
from specnorm_np.data.download import FOLDER_NAME

__all__ = ["write_fake_cifar10", "make_archive", "fake_batch"]


def fake_batch(
    images_per_batch: int, rng: np.random.Generator, label: str = "fake batch", *,
    key_type: type = bytes,
) -> dict:
    """A batch dict in the official format: uint8 ``data`` (N, 3072) and N labels in 0..9.

    Labels cycle through the ten classes (then are shuffled) so every class is present.
    """
    labels = rng.permutation(np.arange(images_per_batch) % len(CLASS_NAMES)).tolist()
    data = rng.integers(0, 256, size=(images_per_batch, 3072), dtype=np.uint8)

    def key(name: str) -> str | bytes:
        return name.encode() if key_type is bytes else name

    return {
        key("batch_label"): label.encode(),
        key("labels"): labels,
        key("data"): data,
        key("filenames"): [f"fake_{index:05d}.png".encode() for index in range(images_per_batch)],
    }


def write_fake_cifar10(
    root: str | os.PathLike[str], *, images_per_batch: int = 20, seed: int = 0,
    key_type: type = bytes, protocol: int = 2,
) -> Path:
    """Write ``root / "cifar-10-batches-py"`` with six random batches and ``batches.meta``.

    Returns the folder. ``key_type`` (``bytes`` or ``str``) and ``protocol`` choose how the
    dicts are pickled.
    """
    folder = Path(root) / FOLDER_NAME
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index, name in enumerate((*TRAIN_FILES, *TEST_FILES)):
        batch = fake_batch(images_per_batch, rng, f"{name} {index}", key_type=key_type)
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=protocol)
    meta = {
        b"num_cases_per_batch": images_per_batch,
        b"label_names": [name.encode() for name in CLASS_NAMES],
        b"num_vis": 3072,
    }
    with open(folder / META_FILE, "wb") as handle:
        pickle.dump(meta, handle, protocol=protocol)
    return folder


def make_archive(folder: str | os.PathLike[str], archive: str | os.PathLike[str]) -> Path:
    """Pack ``folder`` (as its own top-level entry) into the gzip tar ``archive``."""
    folder, archive = Path(folder), Path(archive)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive
