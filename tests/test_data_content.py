"""Content verification (SHA-256 of decoded pixels and labels) on small generated folders."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from specnorm_np.data import (
    OFFICIAL_CONTENT_SHA256,
    ChecksumError,
    DatasetError,
    cifar10,
    content_sha256,
    load_cifar10,
    read_batch,
)
from specnorm_np.data.content import check_content
from specnorm_np.data.download import file_md5
from specnorm_np.data.synthetic import write_fake_cifar10

PER_BATCH = 20
NAMES = (*cifar10.TRAIN_FILES, *cifar10.TEST_FILES)


def _digests(folder):
    """The digests of a folder, computed the way the loader lays the arrays out."""
    table = {}
    for name in NAMES:
        images, labels = read_batch(folder / name, images_per_batch=None)
        table[name] = content_sha256(images, labels)
    return table


@pytest.fixture
def folder(tmp_path):
    # protocol 4 stores the pixel bytes verbatim, so a byte of the file can be flipped below
    return write_fake_cifar10(tmp_path, images_per_batch=PER_BATCH, seed=5, protocol=4)


def test_digest_is_of_the_channels_last_array_the_loader_returns(folder):
    images, labels = read_batch(folder / "data_batch_1", images_per_batch=None)
    assert not images.flags.c_contiguous  # a view of the file's (N, 3072) rows
    copy = np.ascontiguousarray(images)
    assert content_sha256(images, labels) == content_sha256(copy, labels.astype(np.int32))
    # the file's own row layout (R, G, B planes) is not what is hashed
    rows = images.transpose(0, 3, 1, 2).reshape(PER_BATCH, 3072)
    assert content_sha256(rows.reshape(images.shape), labels) != content_sha256(images, labels)


def test_flipped_pixel_byte_in_the_file_is_found_and_named(folder):
    expected = _digests(folder)
    load_cifar10(folder.parent, images_per_batch=PER_BATCH, check_content=expected)  # intact
    path = folder / "data_batch_3"
    data = read_batch(path, images_per_batch=None)[0]
    raw = bytearray(path.read_bytes())
    rows = data.transpose(0, 3, 1, 2).reshape(PER_BATCH, 3072)  # the pickled (N, 3072) array
    offset = bytes(raw).find(rows.tobytes())
    assert offset > 0
    raw[offset + 1000] ^= 0x01  # one bit of one pixel of image 0
    path.write_bytes(bytes(raw))
    read_batch(path, images_per_batch=None)  # still a well-formed batch: shape, keys, labels
    with pytest.raises(ChecksumError) as info:
        load_cifar10(folder.parent, images_per_batch=PER_BATCH, check_content=expected)
    message = str(info.value)
    assert isinstance(info.value, DatasetError)
    assert str(path) in message and "decoded pixels differ" in message
    assert expected["data_batch_3"]["images"] in message and "--download" in message
    assert "labels" not in message.split("(")[1]  # only the pixels are wrong


def test_changed_label_is_found(folder):
    expected = _digests(folder)
    path = folder / "test_batch"
    with open(path, "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    batch[b"labels"][7] = (batch[b"labels"][7] + 1) % 10
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)
    with pytest.raises(ChecksumError, match=r"test_batch: the decoded labels differ"):
        load_cifar10(folder.parent, images_per_batch=PER_BATCH, check_content=expected)


def test_reserialised_copy_passes_the_content_check_but_not_md5(folder, tmp_path):
    expected = _digests(folder)
    md5 = {name: file_md5(folder / name) for name in NAMES}
    copy = tmp_path / "copy" / folder.name
    copy.mkdir(parents=True)
    for name in (*NAMES, cifar10.META_FILE):
        with open(folder / name, "rb") as handle:
            content = pickle.load(handle, encoding="bytes")
        if name != cifar10.META_FILE:  # str keys and a NumPy label array: new bytes
            content = {k.decode(): v for k, v in content.items()}
            content["labels"] = np.asarray(content["labels"], dtype=np.int32)
        with open(copy / name, "wb") as handle:
            pickle.dump(content, handle, protocol=pickle.HIGHEST_PROTOCOL)
    assert all(file_md5(copy / name) != md5[name] for name in NAMES)
    (x_train, _), _ = load_cifar10(copy.parent, images_per_batch=PER_BATCH,
                                   check_content=expected)
    assert x_train.shape == (5 * PER_BATCH, 32, 32, 3)
    with pytest.raises(ChecksumError):
        cifar10.verify_checksums(copy, md5)


def test_official_digests_are_checked_by_default_for_official_sizes_only(folder):
    assert cifar10._expected_content(True, cifar10.IMAGES_PER_BATCH) is OFFICIAL_CONTENT_SHA256
    assert cifar10._expected_content(True, PER_BATCH) == {}
    assert cifar10._expected_content(False, cifar10.IMAGES_PER_BATCH) == {}
    assert set(OFFICIAL_CONTENT_SHA256) == set(NAMES)
    # generated data of another size has no official digest: it loads
    load_cifar10(folder.parent, images_per_batch=PER_BATCH)
    # check_content=False skips a given table
    wrong = {name: {"images": "0" * 64, "labels": "0" * 64} for name in NAMES}
    load_cifar10(folder.parent, images_per_batch=PER_BATCH, check_content=False)
    with pytest.raises(ChecksumError, match="pixels and labels differ"):
        load_cifar10(folder.parent, images_per_batch=PER_BATCH, check_content=wrong)


def test_check_content_rejects_non_uint8_images():
    with pytest.raises(ValueError, match="uint8"):
        content_sha256(np.zeros((1, 32, 32, 3), np.float32), np.zeros(1, np.int64))
    images = np.zeros((2, 32, 32, 3), np.uint8)
    labels = np.array([1, 2])
    check_content("x", images, labels, content_sha256(images, labels))
