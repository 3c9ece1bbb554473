"""Content verification of CIFAR-10: SHA-256 of each batch's *decoded* pixels and labels.

The MD5 of a file (:func:`~specnorm_np.data.cifar10.verify_checksums`) says whether its bytes are
the official ones; a correct copy whose pickles were written anew (another protocol, ``str``
keys, a NumPy array instead of a list for the labels) fails it although every pixel is right.
What matters for training is the content, so the loader checks, by default, for each batch:

* ``images``: SHA-256 of the uint8 array exactly as the loader returns it, shape
  (N, 32, 32, 3), channels last, C order;
* ``labels``: SHA-256 of the labels as little-endian int64, shape (N,).

A single flipped pixel byte changes the first digest whatever the pickle's bytes. The digests of
the official CIFAR-10 (:data:`OFFICIAL_CONTENT_SHA256`) were computed from the project's copy,
whose pixels and labels are the official ones. Hashing one 10,000-image batch (30.7 MB) takes
about 0.06 s on the project's 2-core machine, against 0.13-0.38 s to read and decode it (see
the README's data section for the measurement).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from specnorm_np.data.errors import ChecksumError

__all__ = ["OFFICIAL_CONTENT_SHA256", "content_sha256", "check_content"]

#: SHA-256 of each official batch's decoded images (uint8, (10000, 32, 32, 3), C order) and
#: labels (little-endian int64, (10000,)).
OFFICIAL_CONTENT_SHA256: dict[str, dict[str, str]] = {
    "data_batch_1": {
        "images": "fc115a3de050d667b88cbd5b0b9612ebf996c54230fe7758f3a14bb5af9a1c27",
        "labels": "66145c918fed3a0358c4001da734fbc15cb584ddf34c823fa524e6b9c81542b7",
    },
    "data_batch_2": {
        "images": "89e609b642f687bc796fa3bfa4211005582a0e8131d463d996d11ddb297d312e",
        "labels": "1074c604720c88e1f4d8408e1995944e9bc65877af3e8c5503da69209d57286b",
    },
    "data_batch_3": {
        "images": "93a365823e61729490a8801d80864ccd0ab1e8c98f19d71af65644d1c5f1486e",
        "labels": "fe1021a9820682f7eb5cc7f65ff3d015d8a33876df6dd7787404f0fa8cf5937f",
    },
    "data_batch_4": {
        "images": "809eb95ecd057a36516318f5023ea619009dd70dd38193db9da43125a928e6fa",
        "labels": "1599745ad42ec41be72e2f3f716b65bac89321693690656a125b1ea3ca3feeea",
    },
    "data_batch_5": {
        "images": "d05b7d66d216d6df882cc760cdc0ff2f1f0437abf699ed16005c021ef0add9cb",
        "labels": "a3a7f0cf6cafd5b2d4610fd467bd87987a0a9ff93958b860a567c925a00ad56d",
    },
    "test_batch": {
        "images": "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
        "labels": "cbb7365de8ed11f05cc4c3a1e7f78144127c5e851efd83762fb18202461230bb",
    },
}


def content_sha256(images: Any, labels: Any) -> dict[str, str]:
    """``{"images": hex, "labels": hex}`` of one batch.

    Parameters
    ----------
    images : ndarray, uint8, shape (N, 32, 32, 3)
        Channels last, as :func:`~specnorm_np.data.read_batch` returns them (copied to C order
        first when they are a strided view).
    labels : ndarray of ints, shape (N,)
        Hashed as little-endian int64.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"content_sha256: images must be uint8, got {images.dtype}")
    pixels = np.ascontiguousarray(images)
    values = np.ascontiguousarray(np.asarray(labels).reshape(-1), dtype="<i8")
    return {"images": hashlib.sha256(pixels.data).hexdigest(),
            "labels": hashlib.sha256(values.data).hexdigest()}


def check_content(path: Any, images: Any, labels: Any, expected: dict[str, str]) -> None:
    """Raise :class:`~specnorm_np.data.ChecksumError` naming ``path`` when the digests of
    ``images`` / ``labels`` differ from ``expected`` (a dict as in :func:`content_sha256`)."""
    found = content_sha256(images, labels)
    wrong = [part for part in ("images", "labels") if found[part] != expected[part].lower()]
    if not wrong:
        return
    what = " and ".join({"images": "pixels", "labels": "labels"}[part] for part in wrong)
    details = "; ".join(f"{part}: expected SHA-256 {expected[part]}, found {found[part]}"
                        for part in wrong)
    raise ChecksumError(
        f"{path}: the decoded {what} differ from the official CIFAR-10 ({details}). The file is "
        "damaged or not the official data. Replace the folder with a good copy: delete it and "
        "run again with --download (Python: load_cifar10(root, download=True)), or copy it "
        "again from where it came. To load a deliberately modified copy, pass "
        "check_content=False to load_cifar10.")
