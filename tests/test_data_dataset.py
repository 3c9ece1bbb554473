"""Subsets, splits, batches and transforms, each on a case with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from specnorm_np.data import (
    ArrayDataset,
    ChannelStandardization,
    Compose,
    DatasetError,
    GlobalContrastNormalization,
    RandomCrop,
    RandomHorizontalFlip,
    cifar10_dataset,
    horizontal_flip,
)
from specnorm_np.data.synthetic import write_fake_cifar10


@pytest.fixture
def dataset(rng):
    # 103 images, classes deliberately unbalanced (class 9 has the fewest: 6)
    labels = np.concatenate([np.full(count, label) for label, count in
                             enumerate([14, 12, 11, 10, 10, 10, 10, 10, 10, 6])])
    labels = rng.permutation(labels)
    images = rng.integers(0, 256, size=(labels.size, 6, 5, 3), dtype=np.uint8)
    return ArrayDataset(images, labels, name="toy")


def test_stratified_subset_exact_counts_and_seeded(dataset):
    subset = dataset.stratified_subset(4, seed=1)
    np.testing.assert_array_equal(subset.class_counts(), np.full(10, 4))
    again = dataset.stratified_subset(4, seed=1)
    np.testing.assert_array_equal(subset.images, again.images)
    np.testing.assert_array_equal(subset.labels, again.labels)
    other = dataset.stratified_subset(4, seed=2)
    assert not np.array_equal(subset.images, other.images)
    # the subset's images are images of the dataset with their own labels
    flat = dataset.images.reshape(len(dataset), -1)
    for image, label in zip(subset.images, subset.labels):
        match = np.flatnonzero((flat == image.ravel()).all(axis=1))
        assert match.size == 1 and dataset.labels[match[0]] == label
    assert subset.images.dtype == np.uint8


def test_n_per_class_too_large_names_the_argument(dataset):
    with pytest.raises(DatasetError, match=r"n_per_class=7 .*class 9 has \(6 images\)"):
        dataset.stratified_subset(7)
    with pytest.raises(DatasetError, match="n_per_class must be an int >= 1"):
        dataset.stratified_subset(0)


def test_split_is_disjoint_complete_stratified_and_seeded(dataset):
    train, validation = dataset.split(0.2, seed=3)
    assert len(train) + len(validation) == len(dataset) and len(validation) == 21
    combined = np.concatenate([train.images, validation.images]).reshape(len(dataset), -1)
    assert np.unique(combined, axis=0).shape[0] == len(dataset)
    # largest-remainder shares: each class within one image of 20 %
    share = validation.class_counts() / dataset.class_counts()
    assert np.all(np.abs(validation.class_counts() - 0.2 * dataset.class_counts()) < 1)
    assert share.min() > 0
    train_again, _ = dataset.split(0.2, seed=3)
    np.testing.assert_array_equal(train.images, train_again.images)
    _, plain = dataset.split(30, seed=3, stratified=False)
    assert len(plain) == 30
    for bad in (0, len(dataset), 1.0, -0.5, "half"):
        with pytest.raises(DatasetError, match="validation_size"):
            dataset.split(bad)


def test_batches_cover_each_epoch_once_and_convert_per_batch(dataset):
    iterator = dataset.batches(16, seed=5)
    assert len(iterator) == 7  # 6 full batches of 16 and one of 7
    flat = dataset.images.reshape(len(dataset), -1).astype(np.float32) / 255
    orders = []
    for _ in range(2):
        seen = []
        for x, y in iterator:
            assert x.dtype == np.float32 and x.shape[1:] == (6, 5, 3)
            assert x.max() <= 1.0 and y.dtype == np.int64
            for image, label in zip(x.reshape(len(x), -1), y):
                index = int(np.flatnonzero(np.abs(flat - image).max(axis=1) < 1e-6)[0])
                assert dataset.labels[index] == label
                seen.append(index)
        assert sorted(seen) == list(range(len(dataset)))  # without replacement
        orders.append(seen)
    assert orders[0] != orders[1]  # a new permutation each epoch
    repeated = [y for x, y in dataset.batches(16, seed=5)]
    np.testing.assert_array_equal(np.concatenate(repeated), dataset.labels[orders[0]])
    assert dataset.images.dtype == np.uint8


def test_batches_drop_last_and_ordered(dataset):
    ordered = [y for _, y in dataset.batches(10, shuffle=False, drop_last=True)]
    assert len(ordered) == 10
    np.testing.assert_array_equal(np.concatenate(ordered), dataset.labels[:100])
    with pytest.raises(DatasetError, match="batch_size"):
        dataset.batches(0)


def test_bad_dataset_arguments():
    with pytest.raises(DatasetError, match=r"images must be \(N, H, W, C\)"):
        ArrayDataset(np.zeros((3, 4, 4), np.uint8), np.zeros(3, int))
    with pytest.raises(DatasetError, match="labels must be integers of shape"):
        ArrayDataset(np.zeros((3, 4, 4, 1), np.uint8), np.zeros(2, int))
    with pytest.raises(DatasetError, match=r"0\.\.9"):
        ArrayDataset(np.zeros((1, 4, 4, 1), np.uint8), np.array([10]))


def test_cifar10_dataset_split_and_subset(tmp_path):
    write_fake_cifar10(tmp_path, images_per_batch=20)
    train = cifar10_dataset("train", root=tmp_path, images_per_batch=20)
    assert len(train) == 100
    small = cifar10_dataset("train", root=tmp_path, n_per_class=3, images_per_batch=20)
    np.testing.assert_array_equal(small.class_counts(), np.full(10, 3))
    assert len(cifar10_dataset("test", root=tmp_path, images_per_batch=20)) == 20
    with pytest.raises(DatasetError, match=r"split must be one of \('train', 'test'\), got 'val'"):
        cifar10_dataset("val", root=tmp_path)
    with pytest.raises(DatasetError, match="n_per_class=11"):
        cifar10_dataset("train", root=tmp_path, n_per_class=11, images_per_batch=20)


@pytest.mark.parametrize("use_std", [False, True])
def test_gcn_zero_mean_and_stated_norm(rng, use_std):
    images = rng.integers(0, 256, size=(5, 4, 3, 3)).astype(np.float32)
    output = GlobalContrastNormalization(scale=7.0, use_std=use_std)(images)
    flat = output.reshape(5, -1).astype(np.float64)
    np.testing.assert_allclose(flat.mean(axis=1), 0.0, atol=1e-5)
    measure = flat.std(axis=1) if use_std else np.linalg.norm(flat, axis=1)
    np.testing.assert_allclose(measure, 7.0, rtol=1e-5)
    assert output.dtype == np.float32 and output.shape == images.shape
    # known answer for one image of two values: [0, 2] -> centred [-1, 1], norm sqrt(2)
    single = GlobalContrastNormalization(scale=1.0)(np.array([0.0, 2.0]).reshape(1, 1, 2, 1))
    np.testing.assert_allclose(single.ravel(), [-1 / np.sqrt(2), 1 / np.sqrt(2)])
    # scale-free: raw pixels and pixels / 255 give the same output
    np.testing.assert_allclose(GlobalContrastNormalization()(images),
                               GlobalContrastNormalization()(images / 255), rtol=1e-4, atol=1e-5)


def test_gcn_constant_image_becomes_zero():
    output = GlobalContrastNormalization()(np.full((2, 3, 3, 3), 9, np.uint8))
    assert output.dtype == np.float32 and np.all(output == 0)


def test_gcn_constant_image_becomes_zero_after_float32_scaling():
    # every grey level as the pipeline delivers it (float32 x/255): the float32 mean is inexact,
    # so statistics must be taken in float64 or the residue is scaled up to norm 55
    levels = np.arange(256, dtype=np.float32)[:, None, None, None] / np.float32(255)
    images = np.broadcast_to(levels, (256, 4, 4, 3)).astype(np.float32)
    output = GlobalContrastNormalization()(images)
    assert output.dtype == np.float32
    assert np.abs(output).max() < 1e-3


def test_channel_standardization_from_training_statistics(rng):
    images = rng.integers(0, 256, size=(40, 5, 5, 3), dtype=np.uint8)
    transform = ChannelStandardization.fit(images)
    reference = images.reshape(-1, 3).astype(np.float64) / 255
    np.testing.assert_allclose(transform.mean, reference.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(transform.std, reference.std(axis=0), rtol=1e-12)
    output = transform(images.astype(np.float32) / 255).reshape(-1, 3)
    np.testing.assert_allclose(output.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(output.std(axis=0), 1.0, rtol=1e-5)
    with pytest.raises(DatasetError, match="fitted for 3 channels"):
        transform(np.zeros((1, 2, 2, 1), np.float32))


def test_flip_twice_is_identity_and_mirrors_columns(rng):
    images = rng.standard_normal((4, 3, 5, 2)).astype(np.float32)
    flipped = horizontal_flip(images)
    np.testing.assert_array_equal(flipped[:, :, 0], images[:, :, 4])
    np.testing.assert_array_equal(horizontal_flip(flipped), images)
    always = RandomHorizontalFlip(1.0)
    np.testing.assert_array_equal(always(always(images, rng), rng), images)
    never = RandomHorizontalFlip(0.0)(images, rng)
    np.testing.assert_array_equal(never, images)
    half = RandomHorizontalFlip(0.5)(np.repeat(images[:1], 200, axis=0), rng)
    changed = np.array([not np.array_equal(image, images[0]) for image in half])
    assert 50 < changed.sum() < 150  # about half of 200 (binomial, > 7 standard deviations)


def test_random_crop_keeps_shape_and_takes_a_padded_window(rng):
    images = rng.standard_normal((6, 8, 7, 3)).astype(np.float32)
    crop = RandomCrop(padding=2)
    output = crop(images, rng)
    assert output.shape == images.shape and output.dtype == np.float32
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    for image, source in zip(output, padded):
        windows = [(top, left) for top in range(5) for left in range(5)
                   if np.array_equal(source[top:top + 8, left:left + 7], image)]
        assert windows  # each output is one window of the padded image
    assert np.array_equal(RandomCrop(padding=0)(images, rng), images)
    smaller = RandomCrop(padding=0, size=(5, 4))(images, rng)
    assert smaller.shape == (6, 5, 4, 3)
    with pytest.raises(DatasetError, match="needs rng"):
        crop(images)


def test_compose_in_the_batch_iterator(dataset):
    transform = Compose([RandomCrop(1), RandomHorizontalFlip(), GlobalContrastNormalization(3.0)])
    for x, _ in dataset.batches(32, seed=0, transform=transform):
        np.testing.assert_allclose(np.linalg.norm(x.reshape(len(x), -1), axis=1), 3.0,
                                   rtol=1e-5)
        assert x.shape[1:] == (6, 5, 3) and x.dtype == np.float32
