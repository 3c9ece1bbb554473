"""Images and labels in memory: stratified subsets, a train/validation split and batches.

Images stay as they were loaded (uint8, ``(N, H, W, C)``) until a batch is drawn; only then is
the batch converted to float32 (times ``scale``, ``1/255`` by default) and transformed. Every
random choice takes a seed, so the same seed gives the same subset, split and batch order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from specnorm_np._validation import check_int
from specnorm_np.data.cifar10 import CLASS_NAMES, IMAGES_PER_BATCH, load_cifar10
from specnorm_np.data.errors import DatasetError

__all__ = ["ArrayDataset", "BatchIterator", "cifar10_dataset", "stratified_split_indices"]

Array = np.ndarray
SPLITS = ("train", "test")


def _allocate(counts: Array, total: int) -> Array:
    """Split ``total`` over classes in proportion to ``counts`` (largest remainder)."""
    exact = counts * (total / counts.sum())
    share = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - share), kind="stable")
    share[order[: total - int(share.sum())]] += 1
    return share


def stratified_split_indices(
    labels: Array, held_out: int, rng: np.random.Generator
) -> tuple[Array, Array]:
    """Indices ``(kept, held_out)`` with each class in proportion, both sorted ascending."""
    classes, counts = np.unique(labels, return_counts=True)
    share = _allocate(counts, held_out)
    chosen = []
    for label, number in zip(classes, share):
        members = np.flatnonzero(labels == label)
        chosen.append(rng.permutation(members)[:number])
    held = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)
    kept = np.setdiff1d(np.arange(labels.shape[0]), held, assume_unique=True)
    return kept, held


class ArrayDataset:
    """Images ``(N, H, W, C)`` and integer labels ``(N,)`` held in memory.

    Parameters
    ----------
    images : ndarray, shape (N, H, W, C)
        Usually uint8; kept as given (no copy).
    labels : ndarray of ints, shape (N,)
    num_classes : int
        Labels must lie in ``0 .. num_classes - 1``.
    name : str
        Used in error messages.
    """

    def __init__(self, images: Any, labels: Any, *, num_classes: int = 10,
                 name: str = "dataset") -> None:
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim != 4:
            raise DatasetError(f"{name}: images must be (N, H, W, C), got shape {images.shape}")
        if labels.shape != (images.shape[0],) or (labels.size and labels.dtype.kind not in "iu"):
            raise DatasetError(
                f"{name}: labels must be integers of shape ({images.shape[0]},), got "
                f"{labels.dtype} of shape {labels.shape}"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise DatasetError(f"{name}: labels must lie in 0..{num_classes - 1}, found "
                               f"{labels.min()}..{labels.max()}")
        self.images, self.labels = images, labels.astype(np.int64, copy=False)
        self.num_classes, self.name = num_classes, name

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (f"ArrayDataset({self.name!r}, images {self.images.dtype}{self.images.shape}, "
                f"{self.num_classes} classes)")

    def class_counts(self) -> Array:
        """Number of images of each class, shape (num_classes,)."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def subset(self, indices: Any, *, name: str | None = None) -> ArrayDataset:
        """A new dataset with the images at ``indices`` (copied)."""
        indices = np.asarray(indices, dtype=np.int64)
        return ArrayDataset(self.images[indices], self.labels[indices],
                            num_classes=self.num_classes, name=name or self.name)

    def stratified_subset(self, n_per_class: int, *, seed: int = 0) -> ArrayDataset:
        """Exactly ``n_per_class`` images of every class, chosen at random with ``seed``.

        The chosen images keep their original order. Raises :class:`DatasetError` naming
        ``n_per_class`` when a class has fewer images.
        """
        counts = self.class_counts()
        n_per_class = check_int(n_per_class, "n_per_class", self.name, minimum=1,
                                error=DatasetError)
        if n_per_class > counts.min():
            smallest = int(np.argmin(counts))
            raise DatasetError(
                f"{self.name}: n_per_class={n_per_class} is larger than class {smallest} has "
                f"({counts[smallest]} images); expected n_per_class <= {counts.min()}"
            )
        rng = np.random.default_rng(seed)
        chosen = [rng.permutation(np.flatnonzero(self.labels == label))[:n_per_class]
                  for label in range(self.num_classes)]
        return self.subset(np.sort(np.concatenate(chosen)),
                           name=f"{self.name}[{n_per_class} per class]")

    def split(self, validation_size: int | float, *, seed: int = 0,
              stratified: bool = True) -> tuple[ArrayDataset, ArrayDataset]:
        """Seeded ``(train, validation)`` split.

        Parameters
        ----------
        validation_size : int or float
            A number of images (``1 .. N-1``) or a fraction in ``(0, 1)``.
        stratified : bool
            Keep the class proportions in both parts (largest-remainder rounding).
        """
        total = len(self)
        if isinstance(validation_size, float) and 0.0 < validation_size < 1.0:
            held_out = int(round(validation_size * total))
        elif isinstance(validation_size, (int, np.integer)) and not isinstance(
                validation_size, bool):
            held_out = int(validation_size)
        else:
            held_out = -1
        if not 0 < held_out < total:
            raise DatasetError(
                f"{self.name}: validation_size must be an int in 1..{total - 1} or a fraction "
                f"in (0, 1) leaving both parts non-empty, got {validation_size!r}"
            )
        rng = np.random.default_rng(seed)
        if stratified:
            kept, held = stratified_split_indices(self.labels, held_out, rng)
        else:
            order = rng.permutation(total)
            kept, held = np.sort(order[held_out:]), np.sort(order[:held_out])
        return (self.subset(kept, name=f"{self.name}[train]"),
                self.subset(held, name=f"{self.name}[validation]"))

    def batches(self, batch_size: int, **options: Any) -> BatchIterator:
        """A :class:`BatchIterator` over this dataset (see there for ``options``)."""
        return BatchIterator(self, batch_size, **options)


class BatchIterator:
    """Mini-batches drawn without replacement; each ``iter()`` is one epoch.

    Parameters
    ----------
    dataset : ArrayDataset
    batch_size : int
    seed : int or numpy.random.Generator
        One generator serves all epochs (a new permutation each epoch) and the random
        transforms, so the sequence of epochs is the same for the same seed.
    shuffle : bool
        ``False`` keeps the stored order (for evaluation).
    drop_last : bool
        Skip the last, smaller batch.
    transform : callable or None
        ``transform(x, rng) -> x`` applied to each float batch (see :mod:`.transforms`).
    scale : float
        The uint8 batch is multiplied by it after conversion (``1/255`` gives ``[0, 1]``).
    dtype : dtype
        float32 by default.

    Yields
    ------
    x : ndarray, ``dtype``, shape (B, H, W, C)
    y : ndarray, int64, shape (B,)
    """

    def __init__(self, dataset: ArrayDataset, batch_size: int, *,
                 seed: int | np.random.Generator = 0, shuffle: bool = True,
                 drop_last: bool = False,
                 transform: Callable[[Array, np.random.Generator], Array] | None = None,
                 scale: float = 1.0 / 255.0, dtype: Any = np.float32) -> None:
        batch_size = check_int(batch_size, "batch_size", dataset.name, minimum=1,
                               error=DatasetError)
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.transform, self.scale, self.dtype = transform, scale, np.dtype(dtype)
        self.epoch = 0

    def __len__(self) -> int:
        full, rest = divmod(len(self.dataset), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[tuple[Array, Array]]:
        total = len(self.dataset)
        order = self.rng.permutation(total) if self.shuffle else np.arange(total)
        self.epoch += 1
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            chosen = order[start:start + self.batch_size]
            x = self.dataset.images[chosen].astype(self.dtype)
            if self.scale != 1.0:
                x *= self.dtype.type(self.scale)
            if self.transform is not None:
                x = self.transform(x, self.rng)
            yield x, self.dataset.labels[chosen]


def cifar10_dataset(
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    n_per_class: int | None = None,
    seed: int = 0,
    download: bool = False,
    verify: bool = False,
    quiet: bool = False,
    images_per_batch: int | None = IMAGES_PER_BATCH,
    check_content: bool | dict[str, dict[str, str]] = True,
) -> ArrayDataset:
    """One split of CIFAR-10 as an :class:`ArrayDataset`, optionally a stratified subset.

    Parameters
    ----------
    split : {"train", "test"}
    root, download, verify, quiet, images_per_batch, check_content
        As in :func:`~specnorm_np.data.cifar10.load_cifar10`.
    n_per_class : int or None
        Keep a seeded stratified subset of this many images per class.
    seed : int
        Seed of the subset.
    """
    if split not in SPLITS:
        raise DatasetError(f"cifar10_dataset: split must be one of {SPLITS}, got {split!r}")
    train, test = load_cifar10(root, download=download, verify=verify, quiet=quiet,
                               images_per_batch=images_per_batch, check_content=check_content)
    images, labels = train if split == "train" else test
    dataset = ArrayDataset(images, labels, num_classes=len(CLASS_NAMES), name=f"CIFAR-10 {split}")
    return dataset if n_per_class is None else dataset.stratified_subset(n_per_class, seed=seed)
