"""Small models for the paper's comparison at CPU scale.

The paper trains a VGGNet on CIFAR-10 and a Network in Network and DenseNets on CIFAR-100; their
exact architectures are not given. These are scaled-down members of the same families, sized to
train on a few thousand 32x32 images in minutes on two cores, and each also accepts the 8x8x1
digits images:

``mlp``
    Flatten → Linear(d, 256) → ReLU → Linear(256, 128) → ReLU → Linear(128, classes).
``vgg`` / ``vgg-bn``
    Three blocks of 3x3 convolutions (padding 1) with ``width``, ``2·width`` and ``4·width``
    channels (two convolutions in the first two blocks, one in the last), each followed by
    [BatchNorm2d] → ReLU, and a 2x2 max-pool after each block; then Flatten → Linear(·, 128) →
    ReLU → Linear(128, classes). With ``width=16`` this is 16-32-64 channels.
``nin``
    Network in Network: three "mlpconv" blocks (a 3x3 convolution followed by two 1x1
    convolutions, each with ReLU), max-pools between the blocks, the last 1x1 convolution
    producing one channel per class, then GlobalAvgPool2d. No fully connected layer.

Every model is a :class:`~specnorm_np.nn.Sequential` whose weights are initialised from one
seeded :class:`numpy.random.Generator`, so ``build_model(name, ..., seed=s)`` is reproducible.
Inputs are channels-last ``(N, H, W, C)`` float arrays; outputs are logits ``(N, classes)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from specnorm_np import nn
from specnorm_np._validation import check_int
from specnorm_np.nn.init import as_generator

__all__ = ["MODEL_NAMES", "build_model"]

MODEL_NAMES = ("mlp", "vgg", "vgg-bn", "nin")

DEFAULT_WIDTH = {"mlp": 256, "vgg": 16, "vgg-bn": 16, "nin": 32}


def _check_input_shape(name: str, input_shape: Any, pools: int) -> tuple[int, int, int]:
    try:
        height, width, channels = (int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"build_model({name!r}): input_shape must be (H, W, C), got {input_shape!r}"
        ) from None
    smallest = 2**pools
    if min(height, width) < smallest or channels < 1:
        raise ValueError(
            f"build_model({name!r}): input_shape (H, W, C) needs H, W >= {smallest} and C >= 1 "
            f"for {pools} 2x2 max-pools, got {(height, width, channels)}"
        )
    return height, width, channels


def _mlp(shape: tuple[int, int, int], classes: int, width: int, rng: Any) -> nn.Sequential:
    features = shape[0] * shape[1] * shape[2]
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, width, rng=rng),
        nn.ReLU(),
        nn.Linear(width, width // 2, rng=rng),
        nn.ReLU(),
        nn.Linear(width // 2, classes, rng=rng),
    )


def _vgg(
    shape: tuple[int, int, int], classes: int, width: int, rng: Any, batch_norm: bool
) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = shape[2]
    height, wide = shape[0], shape[1]
    for block, convs in enumerate((2, 2, 1)):
        out = width * 2**block
        for _ in range(convs):
            # a conv followed by BatchNorm needs no bias (BN's shift plays that role)
            layers.append(nn.Conv2d(channels, out, 3, padding=1, bias=not batch_norm, rng=rng))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU())
            channels = out
        layers.append(nn.MaxPool2d(2))
        height, wide = height // 2, wide // 2
    layers += [
        nn.Flatten(),
        nn.Linear(height * wide * channels, 128, rng=rng),
        nn.ReLU(),
        nn.Linear(128, classes, rng=rng),
    ]
    return nn.Sequential(*layers)


def _nin(shape: tuple[int, int, int], classes: int, width: int, rng: Any) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = shape[2]
    plan = ((width, width), (2 * width, 2 * width), (2 * width, classes))
    for block, (mid, last) in enumerate(plan):
        layers += [
            nn.Conv2d(channels, mid, 3, padding=1, rng=rng), nn.ReLU(),
            nn.Conv2d(mid, mid, 1, rng=rng), nn.ReLU(),
            nn.Conv2d(mid, last, 1, rng=rng),
        ]
        channels = last
        if block < len(plan) - 1:
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
    layers.append(nn.GlobalAvgPool2d())
    return nn.Sequential(*layers)


def build_model(
    name: str,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    *,
    seed: int | np.random.Generator = 0,
    width: int | None = None,
) -> nn.Sequential:
    """Build one of :data:`MODEL_NAMES`, initialised reproducibly from ``seed``.

    Parameters
    ----------
    name : {"mlp", "vgg", "vgg-bn", "nin"}
    input_shape : (H, W, C)
        Shape of one input image, channels last: (32, 32, 3) for CIFAR-10, (8, 8, 1) for digits.
    num_classes : int
    seed : int or numpy.random.Generator
        Seeds every layer's initialisation (drawn in layer order from one generator).
    width : int, optional
        Hidden width of the MLP, or channels of the first conv block (see the module docstring);
        defaults to :data:`DEFAULT_WIDTH`.

    Returns
    -------
    Sequential
        Maps ``(N, H, W, C)`` float32 inputs to ``(N, num_classes)`` logits.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"build_model: unknown model {name!r}; choose one of {list(MODEL_NAMES)}")
    owner = f"build_model({name!r})"
    num_classes = check_int(num_classes, "num_classes", owner, minimum=2)
    width = check_int(DEFAULT_WIDTH[name] if width is None else width, "width", owner, minimum=2)
    pools = {"mlp": 0, "vgg": 3, "vgg-bn": 3, "nin": 2}[name]
    shape = _check_input_shape(name, input_shape, pools)
    rng = as_generator(seed)
    if name == "mlp":
        model = _mlp(shape, num_classes, width, rng)
    elif name == "nin":
        model = _nin(shape, num_classes, width, rng)
    else:
        model = _vgg(shape, num_classes, width, rng, batch_norm=name == "vgg-bn")
    model.label = f"{name} model"
    return model
