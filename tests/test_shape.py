"""Flatten."""

from __future__ import annotations

import numpy as np
import pytest

from specnorm_np import gradcheck, nn


@pytest.mark.parametrize("shape", [(1, 3, 5, 2), (4, 7), (2, 3, 1, 1, 2)])
def test_flatten_forward_backward(backend, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    layer = nn.Flatten()
    y = layer.forward(backend.asarray(x))
    assert y.shape == (shape[0], int(np.prod(shape[1:])))
    # channels-last (H, W, C) order: row n is x[n] in C order
    np.testing.assert_array_equal(backend.host(y), x.reshape(shape[0], -1))
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(backend.asarray(dy))
    np.testing.assert_array_equal(backend.host(dx), dy.reshape(shape))
    gradcheck.check_layer(layer, backend.asarray(x), tol=1e-8)


def test_flatten_keeps_dtype_and_errors() -> None:
    layer = nn.Flatten()
    assert layer.forward(np.zeros((2, 2, 2), dtype=np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match=r"^Flatten: .*got shape \(5,\)"):
        layer.forward(np.zeros(5, dtype=np.float32))
    with pytest.raises(ValueError, match=r"^Flatten: .*int64"):
        layer.forward(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match=r"^Flatten: backward expected .*\(2, 4\)"):
        layer.backward(np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(RuntimeError, match="^Flatten: backward\\(\\) called before forward"):
        nn.Flatten().backward(np.zeros((2, 4)))
