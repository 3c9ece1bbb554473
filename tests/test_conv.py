"""The Conv2d layer (specnorm_np.nn.conv); its functional products are in test_ops_conv.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from specnorm_np.gradcheck import check_layer
from specnorm_np.nn import Conv2d
from specnorm_np.nn.conv import conv2d_input_grad_col2im
from specnorm_np.ops import conv2d_naive, conv_output_hw

# (N, H, W, in, out, kernel, stride, padding): non-square inputs and kernels, odd sizes,
# batch 1, strides 1 / 2 / (2, 1), paddings 0 / 1 / 2
GRADCHECK_CASES = [
    (2, 5, 7, 3, 4, (3, 2), 1, 0),
    (1, 7, 5, 2, 3, 3, 2, 1),
    (2, 6, 5, 3, 2, (2, 3), (2, 1), 2),
    (1, 5, 5, 2, 3, 3, 1, 1),
    (2, 4, 6, 3, 2, 1, 2, 0),
    (1, 3, 4, 2, 2, (3, 4), 2, (2, 1)),
]


def _layer(backend, in_channels, out_channels, kernel, stride, padding, bias=True, seed=0,
           dtype=np.float64):
    layer = Conv2d(in_channels, out_channels, kernel, stride, padding, bias, rng=seed,
                   dtype=dtype)
    if layer.bias is not None:  # a non-zero bias, so that the forward check sees it
        layer.bias.data = np.random.default_rng(seed + 1).standard_normal(out_channels).astype(
            dtype)
    return backend.to(layer)


@pytest.mark.parametrize("case", GRADCHECK_CASES)
def test_forward_equals_naive_oracle(backend, rng, case):
    n, h, w, cin, cout, kernel, stride, padding = case
    layer = _layer(backend, cin, cout, kernel, stride, padding)
    x = rng.standard_normal((n, h, w, cin))
    y = backend.host(layer.forward(backend.asarray(x)))
    weight, bias = backend.host(layer.weight.data), backend.host(layer.bias.data)
    expected = conv2d_naive(x, weight, bias, stride, padding)
    assert y.shape == expected.shape == (n, *conv_output_hw((h, w), kernel, stride, padding),
                                         cout)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["convolution", "col2im", "reference"])
@pytest.mark.parametrize("case", GRADCHECK_CASES)
def test_gradients_pass_numerical_check(backend, rng, case, method):
    n, h, w, cin, cout, kernel, stride, padding = case
    layer = _layer(backend, cin, cout, kernel, stride, padding)
    if method == "reference":
        layer.implementation = "reference"
    else:
        layer.input_grad_method = method
    x = backend.asarray(rng.standard_normal((n, h, w, cin)))
    results = check_layer(layer, x, tol=1e-6)
    assert [r.tensor for r in results] == ["input", "weight", "bias"]


def test_gradients_without_bias(backend, rng):
    layer = _layer(backend, 2, 3, (2, 3), 2, 1, bias=False)
    x = backend.asarray(rng.standard_normal((2, 5, 6, 2)))
    assert [r.tensor for r in check_layer(layer, x, tol=1e-6)] == ["input", "weight"]


def test_backward_is_idempotent_and_outputs_are_not_reused(backend, rng):
    layer = _layer(backend, 3, 4, 3, 1, 1)
    x1, x2 = (backend.asarray(rng.standard_normal((2, 5, 6, 3))) for _ in range(2))
    y1 = layer.forward(x1)
    y1_copy = backend.host(y1).copy()
    dy = backend.asarray(rng.standard_normal(y1.shape))
    dx1 = layer.backward(dy)
    dx1_copy = backend.host(dx1).copy()
    grads1 = [backend.host(p.grad).copy() for p in layer.parameters()]
    dx2 = layer.backward(dy)
    np.testing.assert_array_equal(backend.host(dx2), dx1_copy)
    np.testing.assert_array_equal(backend.host(dx1), dx1_copy)  # the first result is untouched
    for p, g in zip(layer.parameters(), grads1):
        np.testing.assert_array_equal(backend.host(p.grad), g)
    layer.forward(x2)
    layer.backward(dy)
    np.testing.assert_array_equal(backend.host(y1), y1_copy)  # scratch reuse left y1 alone
    np.testing.assert_array_equal(backend.host(dx1), dx1_copy)


def test_changing_input_size_between_calls(backend, rng):
    layer = _layer(backend, 2, 3, (3, 2), 2, 1)
    weight, bias = backend.host(layer.weight.data), backend.host(layer.bias.data)
    for h, w in [(6, 6), (9, 7), (6, 6), (4, 5)]:
        x = rng.standard_normal((1, h, w, 2))
        y = backend.host(layer.forward(backend.asarray(x)))
        np.testing.assert_allclose(y, conv2d_naive(x, weight, bias, 2, 1), rtol=1e-12)
        assert layer.input_hw == (h, w)
        dy = rng.standard_normal(y.shape)
        dx = backend.host(layer.backward(backend.asarray(dy)))
        np.testing.assert_allclose(dx, conv2d_input_grad_col2im(dy, weight, (h, w), 2, 1),
                                   rtol=1e-12, atol=1e-12)


def test_float32_in_float32_out(backend, rng):
    layer = _layer(backend, 3, 4, 3, 2, 1, dtype=np.float32)
    x = backend.asarray(rng.standard_normal((2, 7, 6, 3)), dtype=np.float32)
    y = layer.forward(x)
    dx = layer.backward(backend.asarray(rng.standard_normal(y.shape), dtype=np.float32))
    assert y.dtype == dx.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in layer.parameters())
    assert layer._workspace.arrays()  # the fast implementation kept scratch buffers ...
    assert all(array.dtype == np.float32 for array in layer._workspace.arrays().values())


def test_input_hw_and_attributes(backend):
    layer = Conv2d(3, 8, (3, 5), stride=2, padding=(1, 2), rng=0)
    assert layer.input_hw is None
    assert (layer.kernel_size, layer.stride, layer.padding) == ((3, 5), (2, 2), (1, 2))
    assert layer.weight.shape == (8, 3, 5, 3) and layer.weight.regularize
    assert layer.bias.shape == (8,) and not layer.bias.regularize
    layer = backend.to(layer)
    x = backend.asarray(np.zeros((1, 9, 11, 3), dtype=np.float32))
    layer.backward(layer.forward(x))
    assert layer.input_hw == (9, 11)
    layer.to("cpu")
    assert layer.input_hw == (9, 11)


def test_he_initialisation_is_seeded():
    a, b, c = (Conv2d(16, 64, 3, rng=seed) for seed in (7, 7, 8))
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(a.weight.data, c.weight.data)
    assert a.weight.data.dtype == np.float32 and not a.bias.data.any()
    # 64·9·16 = 9216 draws: the sample std is within ~3% of sqrt(2 / fan_in)
    np.testing.assert_allclose(a.weight.data.std(), np.sqrt(2 / (16 * 9)), rtol=0.05)


def test_backward_before_forward_is_an_error():
    with pytest.raises(RuntimeError, match="Conv2d: backward.*before forward"):
        Conv2d(1, 1, 1).backward(np.zeros((1, 1, 1, 1), dtype=np.float32))


def test_wrong_upstream_gradient_shape_is_an_error():
    layer = Conv2d(2, 3, 3, padding=1)
    layer.forward(np.zeros((1, 4, 4, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Conv2d: backward expected .*\(1, 4, 4, 3\)"):
        layer.backward(np.zeros((1, 4, 4, 2), dtype=np.float32))


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((4, 4, 3), np.float32), r"Conv2d: expected 4-D input \(N, H, W, C\)"),
        (np.zeros((1, 4, 4, 2), np.float32), "Conv2d: expected 3 channels"),
        (np.zeros((1, 4, 4, 3), np.int64), "Conv2d: expected floating-point input"),
        (np.full((1, 4, 4, 3), np.nan, np.float32), "Conv2d: input contains .* NaN or Inf"),
        (np.full((1, 4, 4, 3), np.inf, np.float32), "Conv2d: input contains .* NaN or Inf"),
        (np.zeros((1, 2, 6, 3), np.float32),
         r"Conv2d: kernel 5x5 is larger than the padded input 4x8 \(input 2x6"),
    ],
)
def test_bad_input_is_an_error(x, message):
    with pytest.raises(ValueError, match=message):
        Conv2d(3, 2, 5, padding=1).forward(x)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"kernel_size": 0}, "Conv2d: kernel_size must be an int >= 1"),
        ({"kernel_size": (3, 3, 3)}, "Conv2d: kernel_size must be"),
        ({"stride": 0}, "Conv2d: stride must be an int >= 1"),
        ({"padding": -1}, "Conv2d: padding must be an int >= 0"),
        ({"padding": 1.5}, "Conv2d: padding must be"),
        ({"in_channels": 0}, "Conv2d: in_channels must be an int >= 1"),
        ({"out_channels": 2.0}, "Conv2d: out_channels must be an int >= 1"),
    ],
)
def test_bad_constructor_arguments_are_errors(arguments, message):
    full = {"in_channels": 2, "out_channels": 3, "kernel_size": 3, **arguments}
    with pytest.raises(ValueError, match=message):
        Conv2d(**full)

@pytest.mark.parametrize("case", GRADCHECK_CASES)
def test_reference_implementation_equals_the_fast_one(backend, rng, case):
    """implementation="reference" (one im2col, the three Linear formulas) vs the default."""
    n, h, w, cin, cout, kernel, stride, padding = case
    fast, reference = (_layer(backend, cin, cout, kernel, stride, padding) for _ in range(2))
    reference.implementation = "reference"
    x = backend.asarray(rng.standard_normal((n, h, w, cin)))
    y_fast, y_reference = fast.forward(x), reference.forward(x)
    np.testing.assert_allclose(backend.host(y_fast), backend.host(y_reference), rtol=1e-12,
                               atol=1e-12)
    dy = backend.asarray(rng.standard_normal(y_fast.shape))
    np.testing.assert_allclose(backend.host(fast.backward(dy)),
                               backend.host(reference.backward(dy)), rtol=1e-12, atol=1e-12)
    for p, q in zip(fast.parameters(), reference.parameters()):
        np.testing.assert_allclose(backend.host(p.grad), backend.host(q.grad), rtol=1e-12,
                                   atol=1e-12)
    assert not reference._workspace.arrays()  # the reference route keeps no scratch
    reference.implementation = "slow"
    with pytest.raises(ValueError, match="Conv2d: implementation must be one of 'fast'"):
        reference.forward(x)


@pytest.mark.parametrize("implementation", ["fast", "reference"])
def test_empty_batch_forward_and_backward(backend, implementation):
    layer = _layer(backend, 3, 4, (3, 2), 2, 1)
    layer.implementation = implementation
    y = layer.forward(backend.asarray(np.zeros((0, 5, 6, 3))))
    assert tuple(y.shape) == (0, 3, 4, 4)
    dx = layer.backward(backend.asarray(np.zeros((0, 3, 4, 4))))
    assert tuple(dx.shape) == (0, 5, 6, 3)
    for p in layer.parameters():
        assert p.grad.shape == p.data.shape and not backend.host(p.grad).any()


def test_upstream_gradient_of_another_dtype_is_refused():
    layer = Conv2d(2, 3, 3, padding=1)  # float32
    y = layer.forward(np.zeros((1, 4, 4, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="Conv2d: upstream gradient dtype float64 does not match"):
        layer.backward(np.zeros(y.shape))
    with pytest.raises(ValueError, match="Conv2d: upstream gradient dtype float64"):
        layer.backward_weights(np.zeros(y.shape))


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.bool_])
def test_non_float_dtype_is_refused(dtype):
    with pytest.raises(ValueError, match="Conv2d: dtype must be a floating-point dtype"):
        Conv2d(2, 3, 3, dtype=dtype)


@st.composite
def layer_geometries(draw):
    """(N, H, W, in, out, kernel, stride, padding, implementation): non-square, batch 0-3."""
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 1)), draw(st.integers(0, 1))
    h = draw(st.integers(max(1, kh - 2 * ph), 5))
    w = draw(st.integers(max(1, kw - 2 * pw), 5))
    return (draw(st.integers(0, 3)), h, w, draw(st.integers(1, 2)), draw(st.integers(1, 3)),
            (kh, kw), (draw(st.integers(1, 2)), draw(st.integers(1, 2))), (ph, pw),
            draw(st.sampled_from(["fast", "reference"])))


@given(geometry=layer_geometries(), seed=st.integers(0, 2**16))
def test_property_layer_matches_oracle_and_gradient_check(geometry, seed):
    """Random geometries: forward equals the loop oracle; float64 gradients pass the checker
    (tolerance 1e-6, random upstream gradient), float32 keeps float32."""
    n, h, w, cin, cout, kernel, stride, padding, implementation = geometry
    rng = np.random.default_rng(seed)
    layer = Conv2d(cin, cout, kernel, stride, padding, rng=seed, dtype=np.float64)
    layer.implementation = implementation
    layer.bias.data = rng.standard_normal(cout)
    x = rng.standard_normal((n, h, w, cin))
    y = layer.forward(x)
    np.testing.assert_allclose(y, conv2d_naive(x, layer.weight.data, layer.bias.data, stride,
                                               padding), atol=1e-12)
    if n:
        check_layer(layer, x, tol=1e-6, seed=seed)
    layer32 = Conv2d(cin, cout, kernel, stride, padding, rng=seed)
    layer32.implementation = implementation
    y32 = layer32.forward(x.astype(np.float32))
    dx32 = layer32.backward(np.ones_like(y32))
    assert y32.dtype == dx32.dtype == layer32.weight.grad.dtype == np.float32
    assert dx32.shape == x.shape
