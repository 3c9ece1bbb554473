"""The three reference networks of the benchmark, built twice: specnorm_np and PyTorch.

Each network is described once as a list of layer specifications (:data:`NETWORKS`); the two
builders read the same list, so the NumPy model (channels-last, N H W C) and the PyTorch model
(N C H W, PyTorch's native CPU layout) have the same layers in the same order.
:func:`copy_weights_to_torch` then gives the PyTorch model exactly the NumPy model's weights,
which is how the tests check that both compute the same function.

Layout differences handled when copying weights:

* conv kernels are (out, kh, kw, in) here and (out, in, kh, kw) in PyTorch;
* flattening an (H, W, C) activation orders features (h, w, c); flattening (C, H, W) orders them
  (c, h, w), so the columns of the Linear layer after a Flatten are permuted accordingly.

PyTorch is imported only inside the functions that need it, so the memory probes of the NumPy
networks (run in their own processes) never load it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "NETWORKS",
    "DESCRIPTIONS",
    "INPUT_SHAPE",
    "NUM_CLASSES",
    "build_numpy",
    "build_torch",
    "copy_weights_to_torch",
    "count_parameters",
]

INPUT_SHAPE = (32, 32, 3)  # one CIFAR-10 image, channels-last
NUM_CLASSES = 10


def _cnn(batch_norm: bool) -> list[tuple[Any, ...]]:
    """conv3x3(3→32)-conv3x3(32→32)-pool-conv3x3(32→64)-conv3x3(64→64)-pool-fc256-fc10."""
    layers: list[tuple[Any, ...]] = []
    for stage, (c_in, c_out) in enumerate([(3, 32), (32, 32), (32, 64), (64, 64)]):
        layers.append(("conv", c_in, c_out, not batch_norm))  # BatchNorm's shift replaces bias
        if batch_norm:
            layers.append(("batchnorm", c_out))
        layers.append(("relu",))
        if stage in (1, 3):
            layers.append(("maxpool", 2))
    # two 2x2 pools take 32x32 down to 8x8: 8*8*64 = 4096 features for the first Linear
    layers += [("flatten", (8, 8, 64)), ("linear", 8 * 8 * 64, 256)]
    layers += [("relu",), ("linear", 256, NUM_CLASSES)]
    return layers


#: name -> list of layer specifications: ("linear", in, out), ("conv", in, out, bias),
#: ("batchnorm", channels), ("relu",), ("maxpool", size), ("flatten", (H, W, C) of its input).
NETWORKS: dict[str, list[tuple[Any, ...]]] = {
    "mlp": [
        ("flatten", INPUT_SHAPE),
        ("linear", 3072, 512),
        ("relu",),
        ("linear", 512, 512),
        ("relu",),
        ("linear", 512, NUM_CLASSES),
    ],
    "cnn": _cnn(batch_norm=False),
    "cnn_bn": _cnn(batch_norm=True),
}

DESCRIPTIONS = {
    "mlp": "(a) MLP 3072-512-512-10, ReLU",
    "cnn": "(b) CNN 4 conv3x3 (32,32,64,64) + 2 maxpool + fc256 + fc10",
    "cnn_bn": "(c) CNN (b) with BatchNorm after every conv, convs without bias",
}


def _spec(name: str) -> list[tuple[Any, ...]]:
    if name not in NETWORKS:
        raise ValueError(f"bench: unknown network {name!r}; expected one of {sorted(NETWORKS)}")
    return NETWORKS[name]


def build_numpy(name: str, *, seed: int = 0, dtype: Any = np.float32) -> Any:
    """The network ``name`` as a ``specnorm_np.nn.Sequential`` taking (N, 32, 32, 3) inputs."""
    from specnorm_np import nn

    rng = np.random.default_rng(seed)
    layers = []
    for kind, *args in _spec(name):
        if kind == "linear":
            layers.append(nn.Linear(args[0], args[1], rng=rng, dtype=dtype))
        elif kind == "conv":
            layers.append(
                nn.Conv2d(args[0], args[1], 3, padding=1, bias=args[2], rng=rng, dtype=dtype)
            )
        elif kind == "batchnorm":
            layers.append(nn.BatchNorm2d(args[0], dtype=dtype))
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "maxpool":
            layers.append(nn.MaxPool2d(args[0]))
        elif kind == "flatten":
            layers.append(nn.Flatten())
    return nn.Sequential(*layers)


def build_torch(name: str, *, seed: int = 0) -> Any:
    """The network ``name`` as a ``torch.nn.Sequential`` taking (N, 3, 32, 32) float32 inputs.

    Its initial weights are PyTorch's own; call :func:`copy_weights_to_torch` to match a NumPy
    model exactly.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers: list[Any] = []
    for kind, *args in _spec(name):
        if kind == "linear":
            layers.append(nn.Linear(args[0], args[1]))
        elif kind == "conv":
            layers.append(nn.Conv2d(args[0], args[1], 3, padding=1, bias=args[2]))
        elif kind == "batchnorm":
            layers.append(nn.BatchNorm2d(args[0]))
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "maxpool":
            layers.append(nn.MaxPool2d(args[0]))
        elif kind == "flatten":
            layers.append(nn.Flatten())
    return nn.Sequential(*layers)


def _batchnorm_arrays(layer: Any) -> tuple[Any, Any, Any, Any]:
    """(scale, shift, running mean, running variance) of a specnorm_np BatchNorm layer."""
    scale = layer.gamma if hasattr(layer, "gamma") else layer.weight
    shift = layer.beta if hasattr(layer, "beta") else layer.bias
    return scale.data, shift.data, layer.running_mean, layer.running_var


def copy_weights_to_torch(name: str, numpy_model: Any, torch_model: Any) -> None:
    """Overwrite ``torch_model``'s parameters and BatchNorm statistics with ``numpy_model``'s.

    Both models must come from the same specification ``name``; conv kernels are transposed to
    (out, in, kh, kw) and the Linear layer after a Flatten gets its columns reordered from
    (h, w, c) to (c, h, w).
    """
    import torch

    from specnorm_np.backend import to_numpy

    def put(target: Any, value: Any) -> None:
        array = np.ascontiguousarray(to_numpy(value), dtype=np.float32)
        with torch.no_grad():
            target.copy_(torch.from_numpy(array).reshape(target.shape))

    flattened_shape = None  # (H, W, C) of the input to the last Flatten seen
    for spec, ours, theirs in zip(_spec(name), numpy_model.layers, torch_model):
        kind = spec[0]
        if kind == "flatten":
            flattened_shape = spec[1]
        elif kind == "linear":
            weight = to_numpy(ours.weight.data)
            if flattened_shape is not None:
                h, w, c = flattened_shape
                weight = weight.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(-1, h * w * c)
                flattened_shape = None
            put(theirs.weight, weight)
            put(theirs.bias, ours.bias.data)
        elif kind == "conv":
            put(theirs.weight, to_numpy(ours.weight.data).transpose(0, 3, 1, 2))
            if ours.bias is not None:
                put(theirs.bias, ours.bias.data)
        elif kind == "batchnorm":
            scale, shift, mean, var = _batchnorm_arrays(ours)
            put(theirs.weight, scale)
            put(theirs.bias, shift)
            put(theirs.running_mean, mean)
            put(theirs.running_var, var)


def count_parameters(model: Any) -> int:
    """Number of trainable scalars of a specnorm_np or a PyTorch model."""
    return sum(int(np.prod(tuple(p.shape))) for p in model.parameters())
