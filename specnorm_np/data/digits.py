"""scikit-learn's bundled 8×8 digits in the CIFAR convention: the offline fallback data set.

``sklearn.datasets.load_digits()`` reads 1,797 images shipped inside the scikit-learn wheel
(no network). Pixel values 0..16 are mapped to uint8 by ``round(value * 255 / 16)``.
"""

from __future__ import annotations

import numpy as np

from specnorm_np.data.dataset import stratified_split_indices
from specnorm_np.data.errors import DatasetError

__all__ = ["load_digits_images"]

Array = np.ndarray


def load_digits_images(
    test_fraction: float = 0.25, seed: int = 0
) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
    """The 8×8 digits as ``(x_train, y_train), (x_test, y_test)``.

    Parameters
    ----------
    test_fraction : float
        Share of images held out for testing, in ``(0, 1)``; split stratified by class.
    seed : int
        Seed of the split.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        ``x`` uint8 of shape (N, 8, 8, 1) with values 0..255; ``y`` int64 (N,) in 0..9.
        With the default fraction: 1,348 training and 449 test images.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"load_digits_images: test_fraction must lie in (0, 1), got "
                           f"{test_fraction!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise DatasetError(
            "load_digits_images needs scikit-learn, which ships the digits images: "
            "pip install scikit-learn (or install this project with the 'digits' extra: "
            "pip install 'specnorm_np[digits]')"
        ) from error
    bunch = load_digits()
    images = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0))
    images = images.astype(np.uint8)[..., None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    held_out = int(round(test_fraction * labels.shape[0]))
    train, test = stratified_split_indices(labels, held_out, np.random.default_rng(seed))
    return (images[train], labels[train]), (images[test], labels[test])
