"""ReLU and LeakyReLU: values, gradients, dtype, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from specnorm_np import gradcheck, nn


def away_from_kink(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random values with |x| >= 0.05, so central differences never straddle the kink at 0."""
    x = rng.standard_normal(shape)
    return np.sign(x) * (0.05 + np.abs(x))


LAYERS = {
    "relu": lambda: nn.ReLU(),
    "leaky": lambda: nn.LeakyReLU(0.2),
    "leaky_default": lambda: nn.LeakyReLU(),
    "leaky_steep": lambda: nn.LeakyReLU(-1.5),
}


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("shape", [(1, 3), (2, 5, 3, 4), (7,)])
def test_gradients(backend, name: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape))
    layer = backend.to(LAYERS[name]())
    x = backend.asarray(away_from_kink(rng, shape))
    gradcheck.check_layer(layer, x, tol=1e-6)


@pytest.mark.parametrize(("slope", "dtype"), [(0.0, np.float32), (0.01, np.float32),
                                              (0.3, np.float64)])
def test_leaky_values_and_dtype(backend, slope: float, dtype: type) -> None:
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]], dtype=dtype)
    y = nn.LeakyReLU(slope) if slope else nn.ReLU()
    out = y.forward(backend.asarray(x))
    assert out.dtype == dtype
    expected = np.where(x > 0, x, slope * x)
    np.testing.assert_allclose(backend.host(out), expected, rtol=1e-6)
    dx = y.backward(backend.asarray(np.ones_like(x)))
    assert dx.dtype == dtype
    np.testing.assert_allclose(backend.host(dx), np.where(x > 0, 1.0, slope), rtol=1e-6)


def test_backward_idempotent_and_before_forward() -> None:
    layer = nn.LeakyReLU(0.1)
    with pytest.raises(RuntimeError, match="LeakyReLU: backward\\(\\) called before forward"):
        layer.backward(np.ones(3))
    rng = np.random.default_rng(0)
    layer.forward(rng.standard_normal((4, 3)))
    dy = rng.standard_normal((4, 3))
    np.testing.assert_array_equal(layer.backward(dy), layer.backward(dy))
    with pytest.raises(ValueError, match=r"LeakyReLU: backward expected .*\(4, 3\)"):
        layer.backward(np.ones((3, 4)))


@pytest.mark.parametrize("layer", [nn.ReLU(), nn.LeakyReLU()])
@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.ones((2, 3), dtype=np.int32), "floating-point input .*int32"),
        (np.array([0.0, np.nan]), "NaN or Inf"),
        (np.array(1.0), "got shape \\(\\)"),
    ],
)
def test_bad_input(layer: nn.Module, x: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{type(layer).__name__}: .*{message}"):
        layer.forward(x)


def test_leaky_constructor_validation() -> None:
    with pytest.raises(ValueError, match="LeakyReLU: negative_slope must be a finite number"):
        nn.LeakyReLU(float("nan"))
    assert "negative_slope=0.2" in repr(nn.LeakyReLU(0.2))


@pytest.mark.parametrize("name", ["relu", "leaky"])
def test_frozen_pattern_makes_the_layer_linear(backend, rng, name):
    """With ``frozen_pattern`` set, forward multiplies by the frozen mask / factor whatever the
    sign of the new input, and backward is that same linear map (checked numerically at
    inputs right at the kink, where the unfrozen layer would not be differentiable)."""
    layer = backend.to(LAYERS[name]())
    x0 = rng.standard_normal((3, 4))
    layer.forward(backend.asarray(x0))
    pattern = layer.pattern()
    layer.frozen_pattern = pattern
    x1 = rng.standard_normal((3, 4)) * 1e-3  # signs mostly differ from x0's
    y = backend.host(layer.forward(backend.asarray(x1)))
    np.testing.assert_allclose(y, x1 * backend.host(pattern), rtol=1e-15)
    results = gradcheck.check_layer(layer, backend.asarray(np.zeros((3, 4))), tol=1e-8)
    assert [r.tensor for r in results] == ["input"]
    with pytest.raises(ValueError, match="frozen pattern only fits"):
        layer.forward(backend.asarray(np.zeros((2, 4))))
    layer.frozen_pattern = None
    assert np.array_equal(backend.host(layer.forward(backend.asarray(-np.ones((2, 4))))) > 0,
                          np.zeros((2, 4), bool))
