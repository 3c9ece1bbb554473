"""The loader on the real CIFAR-10 copy (``SPECNORM_DATA`` or ``../shared/data``).

Skipped, with the reason, where the copy is absent. The reference is a direct ``pickle.load``
of each (trusted) file.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from specnorm_np.data import (
    CLASS_NAMES,
    ChecksumError,
    channel_statistics,
    find_cifar10_folder,
    load_cifar10,
    read_meta,
    verify_checksums,
)


def _real_root() -> Path | None:
    candidates = [os.environ.get("SPECNORM_DATA"),
                  Path(__file__).resolve().parents[2] / "shared" / "data"]
    for candidate in candidates:
        if candidate and find_cifar10_folder(candidate) is not None:
            return Path(candidate)
    return None


ROOT = _real_root()
pytestmark = pytest.mark.skipif(
    ROOT is None,
    reason="real CIFAR-10 not found: set SPECNORM_DATA to the directory containing "
    "cifar-10-batches-py (../shared/data is also tried)",
)


@pytest.fixture(scope="module")
def loaded():
    return load_cifar10(ROOT, quiet=True)


@pytest.fixture(scope="module")
def folder():
    return find_cifar10_folder(ROOT)


def test_counts_shapes_and_types(loaded):
    (x_train, y_train), (x_test, y_test) = loaded
    assert x_train.shape == (50_000, 32, 32, 3) and x_test.shape == (10_000, 32, 32, 3)
    assert x_train.dtype == np.uint8 and x_test.dtype == np.uint8
    assert y_train.shape == (50_000,) and y_test.shape == (10_000,)
    np.testing.assert_array_equal(np.bincount(y_train), np.full(10, 5000))
    np.testing.assert_array_equal(np.bincount(y_test), np.full(10, 1000))


@pytest.mark.parametrize("index, name", [(index, f"data_batch_{index + 1}") for index in range(5)]
                         + [(None, "test_batch")])
def test_pixel_identical_to_a_direct_read(loaded, folder, index, name):
    with open(folder / name, "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    assert data.shape == (10_000, 3072)
    (x_train, y_train), (x_test, y_test) = loaded
    if index is None:
        images, got_labels = x_test, y_test
    else:
        part = slice(index * 10_000, (index + 1) * 10_000)
        images, got_labels = x_train[part], y_train[part]
    # channels-last back to the file's rows: R plane, G plane, B plane
    np.testing.assert_array_equal(images.transpose(0, 3, 1, 2).reshape(10_000, 3072), data)
    np.testing.assert_array_equal(got_labels, labels)


def test_class_names_and_first_labels(folder, loaded):
    assert tuple(read_meta(folder / "batches.meta")) == CLASS_NAMES
    (_, y_train), (_, y_test) = loaded
    # first labels published for the original files (see ../shared/data/README.md)
    assert y_train[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert y_test[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


def test_training_channel_statistics_match_the_published_values(loaded):
    mean, std = channel_statistics(loaded[0][0])
    np.testing.assert_allclose(mean, [0.49139968, 0.48215841, 0.44653091], atol=1e-8)
    np.testing.assert_allclose(std, [0.24703223, 0.24348513, 0.26158784], atol=1e-8)


def test_verify_flags_the_reserialised_batches_but_not_the_meta(folder):
    with pytest.raises(ChecksumError) as info:
        verify_checksums(folder)
    message = str(info.value)
    assert "data_batch_1: expected MD5 c99cafc152244af753f735de768cd75f" in message
    assert "test_batch" in message and "batches.meta" not in message


def test_content_digests_of_every_batch_are_the_official_ones(folder):
    from specnorm_np.data import OFFICIAL_CONTENT_SHA256, content_sha256, read_batch

    for name, expected in OFFICIAL_CONTENT_SHA256.items():
        assert content_sha256(*read_batch(folder / name)) == expected, name


def test_a_copy_with_one_flipped_pixel_is_refused_by_default(folder, tmp_path):
    copy = tmp_path / "cifar-10-batches-py"
    copy.mkdir()
    for path in folder.iterdir():
        if path.name != "data_batch_2":
            (copy / path.name).symlink_to(path)
    with open(folder / "data_batch_2", "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    batch[b"data"] = batch[b"data"].copy()
    batch[b"data"][1234, 567] ^= 0x80
    with open(copy / "data_batch_2", "wb") as handle:
        pickle.dump(batch, handle, protocol=2)
    with pytest.raises(ChecksumError, match=r"data_batch_2: the decoded pixels differ"):
        load_cifar10(tmp_path, quiet=True)
