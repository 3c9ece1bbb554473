"""scikit-learn's 8x8 digits in the CIFAR convention (the offline fallback)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from specnorm_np.data import DatasetError, load_digits_images


def test_digits_shapes_range_and_stratified_split():
    pytest.importorskip("sklearn", reason="scikit-learn (the 'digits' extra) is not installed")
    from sklearn.datasets import load_digits

    (x_train, y_train), (x_test, y_test) = load_digits_images()
    assert x_train.dtype == np.uint8 and x_train.shape[1:] == (8, 8, 1)
    assert len(x_train) + len(x_test) == 1797 and len(x_test) == round(0.25 * 1797)
    assert y_train.dtype == np.int64 and set(np.unique(y_test)) == set(range(10))
    assert x_train.max() == 255 and x_train.min() == 0
    # each class holds out about a quarter of its images
    total = np.bincount(np.concatenate([y_train, y_test]))
    assert np.all(np.abs(np.bincount(y_test) - 0.25 * total) < 1)
    # the pixels are sklearn's images scaled from 0..16 to 0..255
    reference = load_digits()
    scaled = np.rint(reference.images * 255 / 16).astype(np.uint8)
    flat = scaled.reshape(len(scaled), -1)
    first = np.flatnonzero((flat == x_test[0].ravel()).all(axis=1))
    assert first.size >= 1 and reference.target[first[0]] == y_test[0]
    again = load_digits_images()
    np.testing.assert_array_equal(again[1][0], x_test)
    other = load_digits_images(seed=1)
    assert not np.array_equal(other[1][0], x_test)


def test_missing_scikit_learn_explains_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DatasetError, match=r"pip install scikit-learn.*digits"):
        load_digits_images()


def test_bad_fraction():
    with pytest.raises(DatasetError, match="test_fraction"):
        load_digits_images(test_fraction=1.5)
