"""Per-batch image transforms (channels last, ``(N, H, W, C)``).

Every transform is a callable ``transform(images, rng) -> images`` on a float batch (a uint8
batch is converted to float32 first); deterministic ones ignore ``rng``. The batch iterator of
:class:`~specnorm_np.data.dataset.ArrayDataset` applies them after converting the drawn uint8
images to float32, so the whole data set never exists in float. They run on host NumPy arrays.

Global contrast normalization (GCN), the paper's preprocessing (its constants are not given):
for each image ``x`` (all ``H·W·C`` values together)::

    centred = x - mean(x)
    norm    = sqrt(sum(centred ** 2))        # or the standard deviation, with use_std=True
    output  = scale * centred / max(norm, epsilon)

so each output image has mean 0 and ℓ2 norm ``scale`` (standard deviation ``scale`` with
``use_std=True``); a constant image maps to zeros. The default ``scale=55`` follows the GCN
used for CIFAR-10 by Goodfellow et al. (2013, maxout networks; pylearn2): with 3072 values per
image it gives a root-mean-square of ``55 / sqrt(3072) ≈ 0.99`` per value. GCN does not depend on
the input's scale (``x / 255`` or raw pixel values give the same output, up to ``epsilon``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from specnorm_np._validation import check_int
from specnorm_np.data.errors import DatasetError

__all__ = [
    "GlobalContrastNormalization", "ChannelStandardization", "RandomCrop",
    "RandomHorizontalFlip", "Compose", "horizontal_flip", "channel_statistics",
]

Array = np.ndarray
Transform = Callable[[Array, "np.random.Generator | None"], Array]


def _as_float_batch(images: Any, owner: str) -> Array:
    images = np.asarray(images)
    if images.ndim != 4:
        raise DatasetError(
            f"{owner}: expected a batch of images (N, H, W, C), got shape {images.shape}"
        )
    if images.dtype.kind != "f":
        images = images.astype(np.float32)
    return images


def _require_rng(rng: np.random.Generator | None, owner: str) -> np.random.Generator:
    if rng is None:
        raise DatasetError(f"{owner}: a random transform needs rng (a numpy.random.Generator)")
    return rng


class GlobalContrastNormalization:
    """Per image: subtract the mean, divide by the ℓ2 norm (or std), multiply by ``scale``.

    Parameters
    ----------
    scale : float
        Target ℓ2 norm (or standard deviation) of each image; 55 by default (see module notes).
    use_std : bool
        Divide by the standard deviation (``ddof=0``) instead of the ℓ2 norm.
    epsilon : float
        Floor of the divisor; images whose norm is below it are only centred and scaled by
        ``scale / epsilon`` (a constant image becomes zeros).

    Shapes: ``(N, H, W, C)`` -> ``(N, H, W, C)``, same float dtype (uint8 becomes float32).
    """

    def __init__(self, scale: float = 55.0, *, use_std: bool = False, epsilon: float = 1e-8):
        if scale <= 0 or epsilon <= 0:
            raise DatasetError(
                f"GlobalContrastNormalization: scale and epsilon must be > 0, got {scale}, "
                f"{epsilon}"
            )
        self.scale, self.use_std, self.epsilon = float(scale), use_std, float(epsilon)

    def __call__(self, images: Any, rng: np.random.Generator | None = None) -> Array:
        images = _as_float_batch(images, "GlobalContrastNormalization")
        # float64 statistics: in float32 the mean of a constant image such as 3/255 is not exact,
        # and the rounding residue would be blown up to norm `scale`
        flat = images.reshape(images.shape[0], -1).astype(np.float64)
        centred = flat - flat.mean(axis=1, keepdims=True)
        if self.use_std:
            divisor = np.sqrt((centred * centred).mean(axis=1, keepdims=True))
        else:
            divisor = np.sqrt((centred * centred).sum(axis=1, keepdims=True))
        divisor = np.maximum(divisor, self.epsilon)
        return (centred * (self.scale / divisor)).astype(images.dtype).reshape(images.shape)

    def __repr__(self) -> str:
        return (f"GlobalContrastNormalization(scale={self.scale}, use_std={self.use_std}, "
                f"epsilon={self.epsilon})")


def channel_statistics(images: Any, *, scale: float = 1.0 / 255.0) -> tuple[Array, Array]:
    """Per-channel mean and standard deviation (``ddof=0``) of ``images`` times ``scale``.

    For uint8 images the statistics are exact and cheap: a 256-bin histogram per channel, so
    50,000 CIFAR images never need a float copy. Returns two float64 arrays of shape (C,).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise DatasetError(f"channel_statistics: expected images (N, H, W, C) with N >= 1, "
                           f"got shape {images.shape}")
    channels = images.shape[-1]
    mean, std = np.empty(channels), np.empty(channels)
    for channel in range(channels):
        plane = images[..., channel]
        if images.dtype == np.uint8:
            counts = np.bincount(plane.ravel(), minlength=256).astype(np.float64)
            values = np.arange(256, dtype=np.float64) * scale
            total = counts.sum()
            mean[channel] = (counts * values).sum() / total
            std[channel] = np.sqrt((counts * (values - mean[channel]) ** 2).sum() / total)
        else:
            plane = plane.astype(np.float64) * scale
            mean[channel], std[channel] = plane.mean(), plane.std()
    return mean, std


class ChannelStandardization:
    """``(x - mean[c]) / std[c]`` per channel, with statistics from the training set.

    Parameters
    ----------
    mean, std : array of shape (C,)
        In the units of the batches it will see (``[0, 1]`` for the default batch scale).
    """

    def __init__(self, mean: Any, std: Any):
        mean, std = np.asarray(mean, np.float64).ravel(), np.asarray(std, np.float64).ravel()
        if mean.shape != std.shape or (std <= 0).any():
            raise DatasetError(
                f"ChannelStandardization: mean and std need the same shape (C,) and std > 0, "
                f"got {mean.shape}, {std.shape}, std={std}"
            )
        self.mean, self.std = mean, std

    @classmethod
    def fit(cls, images: Any, *, scale: float = 1.0 / 255.0) -> ChannelStandardization:
        """Statistics of the (training) ``images`` (N, H, W, C) multiplied by ``scale``."""
        return cls(*channel_statistics(images, scale=scale))

    def __call__(self, images: Any, rng: np.random.Generator | None = None) -> Array:
        images = _as_float_batch(images, "ChannelStandardization")
        if images.shape[-1] != self.mean.shape[0]:
            raise DatasetError(
                f"ChannelStandardization: fitted for {self.mean.shape[0]} channels, got a batch "
                f"of shape {images.shape}"
            )
        mean, std = self.mean.astype(images.dtype), self.std.astype(images.dtype)
        return (images - mean) / std

    def __repr__(self) -> str:
        return f"ChannelStandardization(mean={self.mean.tolist()}, std={self.std.tolist()})"


class RandomCrop:
    """Pad each image by ``padding`` pixels (value ``fill``) and crop a random window.

    Parameters
    ----------
    padding : int
        Pixels added on each side of height and width (4 is the usual CIFAR choice).
    size : (int, int) or None
        Output height and width; ``None`` keeps the input size.
    fill : float

    Shapes: ``(N, H, W, C)`` -> ``(N, size[0], size[1], C)``; the window's top-left corner is
    drawn uniformly per image from ``0 .. H + 2·padding - size[0]`` (likewise for width).
    """

    def __init__(self, padding: int = 4, size: tuple[int, int] | None = None, fill: float = 0.0):
        padding = check_int(padding, "padding", "RandomCrop", minimum=0, error=DatasetError)
        self.padding, self.size, self.fill = int(padding), size, fill

    def __call__(self, images: Any, rng: np.random.Generator | None = None) -> Array:
        images = _as_float_batch(images, "RandomCrop")
        rng = _require_rng(rng, "RandomCrop")
        count, height, width, _ = images.shape
        out_height, out_width = self.size if self.size is not None else (height, width)
        pad = self.padding
        if out_height > height + 2 * pad or out_width > width + 2 * pad:
            raise DatasetError(
                f"RandomCrop: size {(out_height, out_width)} exceeds the padded image "
                f"{(height + 2 * pad, width + 2 * pad)}"
            )
        padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)),
                        constant_values=self.fill)
        top = rng.integers(0, height + 2 * pad - out_height + 1, size=count)
        left = rng.integers(0, width + 2 * pad - out_width + 1, size=count)
        rows = top[:, None] + np.arange(out_height)
        columns = left[:, None] + np.arange(out_width)
        index = np.arange(count)[:, None, None]
        return padded[index, rows[:, :, None], columns[:, None, :]]

    def __repr__(self) -> str:
        return f"RandomCrop(padding={self.padding}, size={self.size}, fill={self.fill})"


def horizontal_flip(images: Any) -> Array:
    """Mirror every image left-right: ``(N, H, W, C)``, column ``w`` -> ``W - 1 - w``."""
    images = np.asarray(images)
    return images[:, :, ::-1, :].copy()


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``probability`` (drawn per image)."""

    def __init__(self, probability: float = 0.5):
        if not 0.0 <= probability <= 1.0:
            raise DatasetError(
                f"RandomHorizontalFlip: probability must lie in [0, 1], got {probability}"
            )
        self.probability = float(probability)

    def __call__(self, images: Any, rng: np.random.Generator | None = None) -> Array:
        images = _as_float_batch(images, "RandomHorizontalFlip").copy()
        rng = _require_rng(rng, "RandomHorizontalFlip")
        flip = rng.random(images.shape[0]) < self.probability
        images[flip] = images[flip][:, :, ::-1, :]
        return images

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(probability={self.probability})"


class Compose:
    """Apply ``transforms`` in order, passing the same ``rng`` to each."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, images: Any, rng: np.random.Generator | None = None) -> Array:
        for transform in self.transforms:
            images = transform(images, rng)
        return images

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"
