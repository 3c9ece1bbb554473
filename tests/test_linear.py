"""Linear layer: forward formula, gradients, bad input, initialisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from specnorm_np import gradcheck, nn


@pytest.mark.parametrize(("batch", "fan_in", "fan_out", "bias"),
                         [(1, 3, 2, True), (5, 7, 4, True), (4, 6, 1, False)])
def test_gradients(backend, batch: int, fan_in: int, fan_out: int, bias: bool) -> None:
    rng = np.random.default_rng(batch + fan_in)
    layer = backend.to(nn.Linear(fan_in, fan_out, bias=bias, rng=1).astype(np.float64))
    if bias:  # a non-zero bias so the forward check below is not trivial
        layer.bias.data[...] = backend.asarray(rng.standard_normal(fan_out))
    x = backend.asarray(rng.standard_normal((batch, fan_in)))
    results = gradcheck.check_layer(layer, x, tol=1e-6)
    assert [r.tensor for r in results] == ["input", "weight"] + (["bias"] if bias else [])


def test_forward_matches_formula(backend) -> None:
    rng = np.random.default_rng(0)
    layer = nn.Linear(6, 3, rng=2)
    layer.bias.data[...] = rng.standard_normal(3).astype(np.float32)
    w, b = layer.weight.data.copy(), layer.bias.data.copy()
    layer = backend.to(layer)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    y = layer.forward(backend.asarray(x))
    assert y.dtype == np.float32
    np.testing.assert_allclose(backend.host(y), x @ w.T + b, rtol=1e-5, atol=1e-6)


def test_backward_is_idempotent_and_sets_grads(backend) -> None:
    rng = np.random.default_rng(1)
    layer = backend.to(nn.Linear(5, 4, rng=0))
    x = backend.asarray(rng.standard_normal((3, 5)).astype(np.float32))
    dy = backend.asarray(rng.standard_normal((3, 4)).astype(np.float32))
    layer.forward(x)
    dx1 = backend.host(layer.backward(dy))
    grads1 = [backend.host(p.grad) for p in layer.parameters()]
    dx2 = backend.host(layer.backward(dy))
    np.testing.assert_array_equal(dx1, dx2)
    for g, p in zip(grads1, layer.parameters()):
        np.testing.assert_array_equal(g, backend.host(p.grad))  # set, not accumulated


def test_backward_before_forward_raises() -> None:
    with pytest.raises(RuntimeError, match="Linear: backward\\(\\) called before forward"):
        nn.Linear(3, 2).backward(np.ones((1, 2), dtype=np.float32))


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.ones((2, 3, 1), dtype=np.float32), r"expected 2-D input .*got shape \(2, 3, 1\)"),
        (np.ones((2, 4), dtype=np.float32), r"expected 3 features .*got shape \(2, 4\)"),
        (np.ones((2, 3), dtype=np.int64), "floating-point input .*int64"),
        (np.array([[1.0, np.nan, 0.0]], dtype=np.float32), "1 NaN or Inf"),
        (np.array([[1.0, np.inf, -np.inf]]), "2 NaN or Inf"),
        (np.ones((2, 3), dtype=np.float64), "dtype float64 does not match .*float32"),
    ],
)
def test_bad_input_raises_naming_layer(backend, x: np.ndarray, message: str) -> None:
    layer = backend.to(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="^Linear: .*" + message):
        layer.forward(backend.asarray(x))


def test_wrong_upstream_gradient_shape() -> None:
    layer = nn.Linear(3, 2)
    layer.forward(np.ones((4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Linear: backward expected .*\(4, 2\).*got \(4, 3\)"):
        layer.backward(np.ones((4, 3), dtype=np.float32))


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="Linear: in_features must be an int >= 1, got 0"):
        nn.Linear(0, 3)
    with pytest.raises(ValueError, match="Linear: out_features must be an int >= 1, got 2.0"):
        nn.Linear(3, 2.0)
    for dtype in (np.int32, np.int64, np.bool_, None):
        with pytest.raises(ValueError, match="Linear: dtype must be a floating-point dtype"):
            nn.Linear(3, 2, dtype=dtype)
    assert nn.Linear(3, 2, dtype=np.float64).weight.data.dtype == np.float64


def test_he_initialisation_is_seeded_with_the_right_scale() -> None:
    a, b = nn.Linear(400, 300, rng=5), nn.Linear(400, 300, rng=5)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(a.weight.data, nn.Linear(400, 300, rng=6).weight.data)
    # N(0, 2/fan_in): 120000 draws give the std to within ~0.3% (1 sigma); allow 2%
    assert abs(a.weight.data.std() / np.sqrt(2 / 400) - 1) < 0.02
    assert abs(a.weight.data.mean()) < 0.01 * np.sqrt(2 / 400) * 10
    np.testing.assert_array_equal(a.bias.data, 0)
    assert a.weight.data.dtype == np.float32


@given(n=st.integers(0, 3), fan_in=st.integers(1, 5), fan_out=st.integers(1, 4),
       bias=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_property_linear_formulas_and_gradient_check(n, fan_in, fan_out, bias, dtype, seed):
    """Random sizes (batch 0-3), with and without bias, both dtypes: y = xWᵀ + b, the three
    backward formulas, dtype kept, and float64 gradients pass the checker (tolerance 1e-6)."""
    rng = np.random.default_rng(seed)
    layer = nn.Linear(fan_in, fan_out, bias=bias, rng=seed, dtype=dtype)
    x = rng.standard_normal((n, fan_in)).astype(dtype)
    y = layer.forward(x)
    w = layer.weight.data.astype(np.float64)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, x @ w.T, rtol=rtol, atol=rtol)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dy)
    assert dx.dtype == layer.weight.grad.dtype == dtype
    np.testing.assert_allclose(dx, dy @ w, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(layer.weight.grad, dy.T.astype(np.float64) @ x, rtol=rtol,
                               atol=rtol)
    if bias:
        np.testing.assert_allclose(layer.bias.grad, dy.sum(axis=0), rtol=rtol, atol=rtol)
    if n and dtype == np.float64:
        gradcheck.check_layer(layer, x, tol=1e-6, seed=seed)
