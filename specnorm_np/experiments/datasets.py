"""Data for the experiments: CIFAR-10 subsets or the 8x8 digits, preprocessed as the paper does.

Preprocessing is the paper's global contrast normalization: every image has its mean removed and
is scaled to a per-pixel standard deviation of 1 (an ℓ2 norm of sqrt(H·W·C), ≈55 for CIFAR-10),
so the adversarial ε = 1 is a perturbation of about 1.8% of a CIFAR image's norm.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from specnorm_np.train import DataSplits

__all__ = ["DATASETS", "PREPROCESSING", "DataSpec", "load_splits", "preprocess"]

DATASETS = ("cifar10", "digits")
#: The name recorded for :func:`preprocess` in every run's data identity.
PREPROCESSING = "global contrast normalization (per-image mean 0, std 1), float32"


@dataclass(frozen=True)
class DataSpec:
    """What data a run uses; cheap to send to worker processes, which load it themselves.

    ``train_size`` / ``test_size``: number of images, drawn stratified (the same number per
    class) with ``data_seed``; None means all of them.
    """

    dataset: str = "cifar10"
    train_size: int | None = 5000
    test_size: int | None = None
    data_seed: int = 0
    root: str | None = None
    download: bool = False

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {list(DATASETS)}")
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            if value is not None and int(value) < 10:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 10 (one image "
                                 f"per class), got {value}")


def preprocess(images: Any) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 global-contrast-normalized images (per-image std 1)."""
    from specnorm_np.data import GlobalContrastNormalization

    return np.ascontiguousarray(GlobalContrastNormalization(scale=1.0, use_std=True)(images),
                                dtype=np.float32)


@functools.lru_cache(maxsize=2)
def _raw(dataset: str, root: str | None, download: bool, data_seed: int) -> Any:
    if dataset == "digits":
        from specnorm_np.data import load_digits_images

        return load_digits_images(seed=data_seed)
    from specnorm_np.data import load_cifar10

    return load_cifar10(root, download=download, quiet=True)


def _subset(images: np.ndarray, labels: np.ndarray, size: int | None, seed: int,
            what: str) -> tuple[np.ndarray, np.ndarray]:
    from specnorm_np.data import ArrayDataset, DatasetError

    if size is None or size >= labels.shape[0]:
        if size is not None and size > labels.shape[0]:
            raise DatasetError(f"{what}: asked for {size} images, the data set has "
                               f"{labels.shape[0]}")
        return images, labels
    classes = int(labels.max()) + 1
    if size % classes:
        raise DatasetError(f"{what}: {size} images cannot be split evenly over {classes} "
                           f"classes; use a multiple of {classes}")
    subset = ArrayDataset(images, labels, num_classes=classes, name=what).stratified_subset(
        size // classes, seed=seed)
    return subset.images, subset.labels


@functools.lru_cache(maxsize=2)
def load_splits(spec: DataSpec) -> DataSplits:
    """Load, subset and preprocess the data described by ``spec`` (cached per process).

    Raises :class:`specnorm_np.data.DatasetError` when the data is missing (the message lists
    where it looked) or a requested size is impossible.
    """
    (x_train, y_train), (x_test, y_test) = _raw(spec.dataset, spec.root, spec.download,
                                                spec.data_seed)
    x_train, y_train = _subset(x_train, y_train, spec.train_size, spec.data_seed,
                               f"{spec.dataset} training set (--train-size)")
    x_test, y_test = _subset(x_test, y_test, spec.test_size, spec.data_seed + 1,
                             f"{spec.dataset} test set (--test-size)")
    return DataSplits(preprocess(x_train), np.asarray(y_train, dtype=np.int64),
                      preprocess(x_test), np.asarray(y_test, dtype=np.int64),
                      name=spec.dataset, num_classes=10)
