"""The restricted unpickler admits CIFAR-10 content and refuses anything that could run code."""

from __future__ import annotations

import builtins
import os
import pickle

import numpy as np
import pytest

from specnorm_np.data import DatasetError, UnsafePickleError, load_cifar10, safe_load
from specnorm_np.data.safe_pickle import safe_loads
from specnorm_np.data.synthetic import write_fake_cifar10


class _OpenForWriting:
    """Unpickling this calls ``builtins.open(path, "w")``: it creates a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


class _ShellCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Eval:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (builtins.eval, (self.code,))


def _batch_with(payload: object) -> bytes:
    return pickle.dumps({b"data": payload, b"labels": [0]}, protocol=2)


def test_payload_really_creates_a_file_with_plain_pickle(tmp_path):
    # The control: the same bytes given to pickle.loads do create the file.
    target = tmp_path / "created_by_plain_pickle"
    handle = pickle.loads(_batch_with(_OpenForWriting(str(target))))[b"data"]
    handle.close()
    assert target.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_malicious_open_is_refused_and_creates_nothing(tmp_path, protocol):
    target = tmp_path / "should_not_exist"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _OpenForWriting(str(target))}, protocol=protocol))
    with pytest.raises(UnsafePickleError, match=r"data_batch_1.*refused.*\.open'"):
        safe_load(path)
    assert not target.exists()


def test_malicious_shell_command_is_refused_and_creates_nothing(tmp_path):
    target = tmp_path / "pwned"
    data = _batch_with(_ShellCommand(f"touch {target}"))
    with pytest.raises(UnsafePickleError, match=r"refused.*system"):
        safe_loads(data, source="evil")
    assert not target.exists()


def test_malicious_eval_is_refused(tmp_path):
    target = tmp_path / "eval_file"
    data = _batch_with(_Eval(f"open({str(target)!r}, 'w')"))
    with pytest.raises(UnsafePickleError, match=r"(__builtin__|builtins)\.eval"):
        safe_loads(data)
    assert not target.exists()


def test_malicious_batch_in_a_cifar_folder_is_refused_by_the_loader(tmp_path):
    folder = write_fake_cifar10(tmp_path, images_per_batch=10)
    target = tmp_path / "created"
    (folder / "data_batch_3").write_bytes(_batch_with(_OpenForWriting(str(target))))
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_cifar10(tmp_path, images_per_batch=10)
    assert not target.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_arrays_dicts_lists_bytes_round_trip(protocol):
    rng = np.random.default_rng(0)
    original = {
        b"data": rng.integers(0, 256, (7, 3072), dtype=np.uint8),
        "labels": [1, 2, 3],
        b"batch_label": b"training batch 1 of 5",
        b"filenames": [b"a.png", b"b.png"],
        b"values": rng.standard_normal((2, 3)),
    }
    loaded = safe_loads(pickle.dumps(original, protocol=protocol))
    assert set(loaded) == set(original)
    np.testing.assert_array_equal(loaded[b"data"], original[b"data"])
    np.testing.assert_array_equal(loaded[b"values"], original[b"values"])
    assert loaded["labels"] == [1, 2, 3]
    assert loaded[b"filenames"] == [b"a.png", b"b.png"]


def test_object_arrays_are_refused():
    data = pickle.dumps(np.array([1, "x"], dtype=object), protocol=2)
    with pytest.raises(UnsafePickleError, match="object"):
        safe_loads(data)


def test_codecs_encode_only_as_latin1():
    class _Encode:
        def __reduce__(self):
            import _codecs

            return (_codecs.encode, ("abc", "rot13"))

    with pytest.raises(UnsafePickleError, match="latin1"):
        safe_loads(pickle.dumps(_Encode(), protocol=2))


def test_garbage_and_truncated_bytes_name_the_source():
    with pytest.raises(DatasetError, match="my_file.*truncated or corrupt"):
        safe_loads(pickle.dumps({b"a": b"x" * 100}, protocol=2)[:40], source="my_file")
    with pytest.raises(DatasetError, match="not a readable"):
        safe_loads(b"this is not a pickle at all", source="junk")
