"""float32 purity: a float32 training step creates no float64 array anywhere.

A single float64 intermediate (a Python-float array, ``numpy.ones`` without a dtype, a float64
random draw) silently doubles memory traffic and can promote everything downstream. The test
runs forward, loss, backward and two optimizer steps layer by layer and inspects every
activation, every upstream gradient, every parameter, gradient, buffer and optimizer state, and
everything the layers keep between forward and backward (caches, workspaces).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from specnorm_np import nn
from specnorm_np.ops import Workspace
from specnorm_np.optim import SGD, MultiStepLR


def cnn(seed: int = 0) -> nn.Sequential:
    """Every layer kind, in a CNN on (N, 8, 8, 3) inputs."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False, rng=seed), nn.BatchNorm2d(6), nn.ReLU(),
        nn.MaxPool2d(2),                                                  # (N, 4, 4, 6)
        nn.Conv2d(6, 8, (3, 2), stride=(1, 2), padding=1, rng=seed + 1),  # (N, 4, 3, 8)
        nn.LeakyReLU(0.1), nn.AvgPool2d(2, stride=1),                     # (N, 3, 2, 8)
        nn.Dropout(0.3, seed=seed),
        nn.Flatten(),                                                     # (N, 48)
        nn.Linear(48, 16, rng=seed + 2), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2, seed=1),
        nn.Linear(16, 10, rng=seed + 3),
    )


def float_arrays(obj: Any, path: str, depth: int = 0):
    """Yield (path, array) for every floating array reachable from obj's attributes."""
    if depth > 4 or isinstance(obj, (str, bytes, int, float, np.random.Generator)):
        return
    if hasattr(obj, "dtype") and hasattr(obj, "shape"):
        if obj.dtype.kind == "f":
            yield path, obj
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from float_arrays(value, f"{path}[{key!r}]", depth + 1)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from float_arrays(value, f"{path}[{i}]", depth + 1)
    elif isinstance(obj, nn.Parameter):
        yield from float_arrays(vars(obj), path, depth + 1)
    elif isinstance(obj, Workspace):
        yield from float_arrays(obj.arrays(), path, depth + 1)
    elif isinstance(obj, nn.Module) and depth == 0:
        for name, value in vars(obj).items():
            if name != "layers":  # Sequential's children are inspected on their own
                yield from float_arrays(value, f"{path}.{name}", depth + 1)


def assert_float32(found: list[tuple[str, Any]]) -> None:
    wrong = [(path, str(a.dtype)) for path, a in found if a.dtype != np.float32]
    assert not wrong, f"non-float32 arrays in a float32 step: {wrong}"


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_float32_training_step_has_no_float64(backend, mode: str) -> None:
    rng = np.random.default_rng(0)
    model = backend.to(cnn())
    model.train(mode == "train")
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    schedule = MultiStepLR(optimizer, total=4)
    loss = nn.SoftmaxCrossEntropy()
    x = backend.asarray(rng.standard_normal((4, 8, 8, 3)), np.float32)
    labels = backend.asarray(rng.integers(0, 10, 4))
    for _ in range(2):  # the second step also updates existing momentum buffers
        seen: list[tuple[str, Any]] = []
        activation = x
        for i, layer in enumerate(model):
            activation = layer.forward(activation)
            seen.append((f"output of layer {i} ({layer.label})", activation))
        value, gradient = loss(activation, labels)
        assert isinstance(value, float)
        seen.append(("dlogits", gradient))
        for i in reversed(range(len(model))):
            gradient = model[i].backward(gradient)
            seen.append((f"gradient into layer {i} ({model[i].label})", gradient))
        optimizer.step()
        schedule.step()
        for i, layer in enumerate(model):
            seen.extend(float_arrays(layer, f"layer {i} ({layer.label})"))
        assert_float32(seen)
    assert gradient.shape == x.shape  # the input gradient, checked above
    states = [p.state["momentum_buffer"] for p in model.parameters()]
    assert len(states) == len(model.parameters())
    assert_float32([(f"momentum buffer {i}", s) for i, s in enumerate(states)])
    assert_float32([(f"param {i}", p.data) for i, p in enumerate(model.parameters())] +
                   [(f"grad {i}", p.grad) for i, p in enumerate(model.parameters())])


def test_the_inspection_finds_float64() -> None:
    """The scan above is not vacuous: a float64 buffer or cache entry is reported."""
    layer = nn.BatchNorm1d(3)
    layer.running_var = np.ones(3)  # float64
    layer.forward(np.ones((2, 3), dtype=np.float32))
    found = list(float_arrays(layer, "bn"))
    with pytest.raises(AssertionError, match="bn.running_var"):
        assert_float32(found)
    paths = [path for path, _ in found]
    assert {"bn._cache[1]", "bn.weight['data']", "bn.running_mean"} <= set(paths)


def test_float64_model_stays_float64() -> None:
    model = cnn().astype(np.float64)
    x = np.random.default_rng(1).standard_normal((2, 8, 8, 3))
    y = model.forward(x)
    dx = model.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == np.float64
    assert all(p.grad.dtype == np.float64 for p in model.parameters())
