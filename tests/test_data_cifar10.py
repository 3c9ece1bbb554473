"""Loading, root resolution and validation on small generated folders in the official format."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from specnorm_np.data import (
    ChecksumError,
    DatasetError,
    cifar10,
    find_cifar10_folder,
    load_cifar10,
    read_batch,
    read_meta,
)
from specnorm_np.data.download import file_md5
from specnorm_np.data.synthetic import write_fake_cifar10

PER_BATCH = 20


@pytest.fixture
def fake_root(tmp_path):
    write_fake_cifar10(tmp_path, images_per_batch=PER_BATCH, seed=3)
    return tmp_path


def _direct(folder, name):
    with open(folder / name, "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    keys = {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}
    return keys["data"], np.asarray(keys["labels"])


@pytest.mark.parametrize("key_type", [bytes, str])
def test_round_trip_matches_the_pickled_arrays(tmp_path, key_type):
    folder = write_fake_cifar10(tmp_path, images_per_batch=PER_BATCH, key_type=key_type)
    (x_train, y_train), (x_test, y_test) = load_cifar10(tmp_path, images_per_batch=PER_BATCH)
    assert x_train.shape == (5 * PER_BATCH, 32, 32, 3) and x_train.dtype == np.uint8
    assert x_test.shape == (PER_BATCH, 32, 32, 3) and y_test.dtype == np.int64
    assert x_train.flags["C_CONTIGUOUS"]
    for index in range(5):
        data, labels = _direct(folder, f"data_batch_{index + 1}")
        part = slice(index * PER_BATCH, (index + 1) * PER_BATCH)
        # row layout: R plane, G plane, B plane, each 32x32 row-major
        expected = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(x_train[part], expected)
        np.testing.assert_array_equal(y_train[part], labels)
        # one pixel by hand: image 0, row 5, column 7, green channel
        assert x_train[part][0, 5, 7, 1] == data[0, 1024 + 5 * 32 + 7]
    data, labels = _direct(folder, "test_batch")
    np.testing.assert_array_equal(x_test.reshape(PER_BATCH, -1, 3).transpose(0, 2, 1)
                                  .reshape(PER_BATCH, -1), data)
    np.testing.assert_array_equal(y_test, labels)


def test_consistency_mode_and_default_count(fake_root):
    (x_train, _), _ = load_cifar10(fake_root, images_per_batch=None)
    assert x_train.shape[0] == 5 * PER_BATCH
    with pytest.raises(DatasetError, match=r"batches\.meta.*num_cases_per_batch.*10000"):
        load_cifar10(fake_root)  # official count expected by default
    with pytest.raises(DatasetError, match=r"data_batch_1.*\(10000, 3072\).*\(20, 3072\)"):
        read_batch(fake_root / "cifar-10-batches-py" / "data_batch_1")


def test_root_may_be_the_folder_itself_or_come_from_the_environment(fake_root, monkeypatch):
    folder = fake_root / "cifar-10-batches-py"
    assert find_cifar10_folder(fake_root) == folder
    assert find_cifar10_folder(folder) == folder
    direct = load_cifar10(folder, images_per_batch=PER_BATCH)
    monkeypatch.setenv("SPECNORM_DATA", str(fake_root))
    from_environment = load_cifar10(images_per_batch=PER_BATCH)
    np.testing.assert_array_equal(direct[0][0], from_environment[0][0])


def test_default_cache_in_home(tmp_path, monkeypatch):
    monkeypatch.delenv("SPECNORM_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    write_fake_cifar10(tmp_path / ".cache" / "specnorm_np", images_per_batch=PER_BATCH)
    (x_train, _), _ = load_cifar10(images_per_batch=PER_BATCH)
    assert x_train.shape == (5 * PER_BATCH, 32, 32, 3)


def test_missing_data_lists_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    empty = tmp_path / "nothing_here"
    with pytest.raises(DatasetError) as info:
        load_cifar10(empty)
    message = str(info.value)
    assert f"in {empty} (the root argument)" in message and "cifar-10-batches-py" in message
    assert message.count(str(empty)) == 1  # each place once
    assert "--download" in message and "download=True" in message and "SPECNORM_DATA" in message
    monkeypatch.setenv("SPECNORM_DATA", str(tmp_path / "from_env"))
    with pytest.raises(DatasetError, match=r"from_env.*\$SPECNORM_DATA"):
        load_cifar10()


def test_missing_batch_file_is_named(fake_root):
    (fake_root / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DatasetError, match=r"data_batch_4: missing"):
        load_cifar10(fake_root, images_per_batch=PER_BATCH)


def test_truncated_batch_is_named(fake_root):
    path = fake_root / "cifar-10-batches-py" / "data_batch_2"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(DatasetError, match=r"data_batch_2.*truncated"):
        load_cifar10(fake_root, images_per_batch=PER_BATCH)


def _rewrite(path, **changes):
    with open(path, "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    for key, value in changes.items():
        if value is None:
            del batch[key.encode()]
        else:
            batch[key.encode()] = value
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"data": np.zeros((PER_BATCH, 3071), np.uint8)},
         r"shape \(20, 3072\), found \(20, 3071\)"),
        ({"data": np.zeros((PER_BATCH - 1, 3072), np.uint8)}, r"found \(19, 3072\)"),
        ({"data": np.zeros((PER_BATCH, 3072), np.float32)}, r"uint8.*found float32"),
        ({"data": np.zeros((PER_BATCH, 32, 32, 3), np.uint8)}, r"uint8 array \(N, 3072\)"),
        ({"labels": None}, r"missing key\(s\) \['labels'\]"),
        ({"labels": [0] * (PER_BATCH - 1)}, r"expected 20 labels.*found 19"),
        ({"labels": [0] * (PER_BATCH - 1) + [10]}, r"0\.\.9.*index 19 \(value 10\)"),
        ({"labels": [-1] + [0] * (PER_BATCH - 1)}, r"index 0 \(value -1\)"),
    ],
)
def test_wrong_content_is_named(fake_root, changes, pattern):
    _rewrite(fake_root / "cifar-10-batches-py" / "test_batch", **changes)
    with pytest.raises(DatasetError, match=r"test_batch.*" + pattern):
        load_cifar10(fake_root, images_per_batch=PER_BATCH)


def test_consistency_mode_still_catches_row_label_mismatch(fake_root):
    _rewrite(fake_root / "cifar-10-batches-py" / "data_batch_1", labels=[1] * 5)
    with pytest.raises(DatasetError, match=r"data_batch_1.*expected 20 labels.*found 5"):
        load_cifar10(fake_root, images_per_batch=None)


def test_not_a_dict_is_refused(fake_root):
    path = fake_root / "cifar-10-batches-py" / "data_batch_5"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(DatasetError, match=r"data_batch_5.*dict.*found list"):
        load_cifar10(fake_root, images_per_batch=PER_BATCH)


def test_meta_gives_class_names_and_is_validated(fake_root):
    path = fake_root / "cifar-10-batches-py" / "batches.meta"
    assert read_meta(path, images_per_batch=PER_BATCH)[0] == "airplane"
    path.write_bytes(pickle.dumps({b"label_names": [b"a", b"b"]}, protocol=2))
    with pytest.raises(DatasetError, match=r"batches\.meta.*label_names"):
        load_cifar10(fake_root, images_per_batch=PER_BATCH)


def test_verify_reports_every_mismatch_with_expected_and_found(fake_root):
    folder = fake_root / "cifar-10-batches-py"
    with pytest.raises(ChecksumError) as info:
        load_cifar10(fake_root, verify=True, images_per_batch=PER_BATCH)
    message = str(info.value)
    for name, expected in cifar10.OFFICIAL_MD5.items():
        assert f"{folder / name}: expected MD5 {expected}, found {file_md5(folder / name)}" \
            in message
    assert "download again" in message and "verify=False" in message


def test_verify_passes_when_checksums_match(fake_root, monkeypatch):
    folder = fake_root / "cifar-10-batches-py"
    table = {name: file_md5(folder / name) for name in cifar10.OFFICIAL_MD5}
    monkeypatch.setattr(cifar10, "OFFICIAL_MD5", table)
    (x_train, _), _ = load_cifar10(fake_root, verify=True, images_per_batch=PER_BATCH)
    assert x_train.shape[0] == 5 * PER_BATCH
    (folder / "data_batch_3").write_bytes((folder / "data_batch_3").read_bytes() + b"\0")
    with pytest.raises(ChecksumError) as info:
        load_cifar10(fake_root, verify=True, images_per_batch=PER_BATCH)
    assert "data_batch_3" in str(info.value) and "data_batch_1" not in str(info.value)


def test_an_unreadable_file_is_a_dataset_error_naming_it(fake_root, monkeypatch):
    """(As root, permission bits do not apply, so the refusal is simulated.)"""
    from specnorm_np.data import cifar10

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cifar10, "safe_load", refuse)
    with pytest.raises(DatasetError, match=r"batches.meta: cannot be read \(Permission denied\)"):
        load_cifar10(fake_root, images_per_batch=PER_BATCH)
