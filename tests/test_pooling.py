"""MaxPool2d, AvgPool2d, GlobalAvgPool2d (specnorm_np.nn.pooling)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from specnorm_np.gradcheck import check_layer
from specnorm_np.nn import AvgPool2d, GlobalAvgPool2d, MaxPool2d

# (H, W, kernel, stride): tiling (fast path), leftover rows, overlapping, non-square
CASES = [
    (6, 4, 2, None),
    (7, 5, 2, None),
    (5, 6, 3, 1),
    (6, 7, (3, 2), (2, 1)),
    (5, 5, (2, 3), (1, 2)),
    (4, 6, (1, 3), None),
]


def _distinct(rng, shape):
    """Random values with no ties: a shuffled grid with spacing 0.1 (>> the gradcheck eps)."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 3.0


def _naive_pool(x, kernel, stride, reduce):
    """Oracle: plain loops over output positions."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    stride = (kh, kw) if stride is None else stride
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    y = np.empty((x.shape[0], ho, wo, x.shape[3]))
    for p, q in itertools.product(range(ho), range(wo)):
        y[:, p, q, :] = reduce(x[:, p * sh : p * sh + kh, q * sw : q * sw + kw, :], axis=(1, 2))
    return y


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("layer_class, reduce", [(MaxPool2d, np.max), (AvgPool2d, np.mean)])
def test_forward_equals_naive_loops(backend, rng, case, layer_class, reduce):
    h, w, kernel, stride = case
    x = rng.standard_normal((2, h, w, 3))
    y = backend.host(backend.to(layer_class(kernel, stride)).forward(backend.asarray(x)))
    np.testing.assert_allclose(y, _naive_pool(x, kernel, stride, reduce), rtol=1e-12)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("layer_class", [MaxPool2d, AvgPool2d])
def test_gradients_pass_numerical_check(backend, rng, case, layer_class):
    h, w, kernel, stride = case
    x = backend.asarray(_distinct(rng, (2, h, w, 3)))
    results = check_layer(backend.to(layer_class(kernel, stride)), x, tol=1e-6)
    assert [r.tensor for r in results] == ["input"]


def test_max_pool_overlap_sums_gradient_of_every_window(backend):
    """A pixel that is the maximum of several overlapping windows collects all their dy."""
    x = np.zeros((1, 3, 3, 1))
    x[0, 1, 1, 0] = 5.0  # the centre is the maximum of all four 2x2 windows (stride 1)
    x[0, 0, 0, 0] = -1.0
    layer = backend.to(MaxPool2d(2, stride=1))
    layer.forward(backend.asarray(x))
    dy = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
    dx = backend.host(layer.backward(backend.asarray(dy)))
    expected = np.zeros_like(x)
    expected[0, 1, 1, 0] = dy.sum()
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize("stride", [None, 1])
def test_max_pool_ties_go_to_the_first_maximum(backend, stride):
    x = np.ones((1, 4, 4, 2))  # every window is one big tie
    layer = backend.to(MaxPool2d(2, stride))
    y = layer.forward(backend.asarray(x))
    dy = np.arange(1.0, 1.0 + y.size).reshape(y.shape)
    dx = backend.host(layer.backward(backend.asarray(dy)))
    step = 2 if stride is None else 1
    expected = np.zeros_like(x)
    for p, q in itertools.product(range(y.shape[1]), range(y.shape[2])):
        expected[0, p * step, q * step, :] += dy[0, p, q, :]  # top-left entry of the window
    np.testing.assert_array_equal(dx, expected)
    assert dx.sum() == dy.sum()  # the gradient is routed, never duplicated


@pytest.mark.parametrize("layer_class", [MaxPool2d, AvgPool2d])
def test_tiling_fast_path_agrees_with_general_path(rng, layer_class):
    """7x7 input with 2x2/2 windows takes the general path; its 6x6 crop takes the fast one."""
    x = _distinct(rng, (2, 7, 7, 3))
    general, fast = layer_class(2), layer_class(2)
    y_general, y_fast = general.forward(x), fast.forward(x[:, :6, :6, :].copy())
    np.testing.assert_array_equal(y_general, y_fast)
    dy = rng.standard_normal(y_fast.shape)
    dx_general, dx_fast = general.backward(dy), fast.backward(dy)
    np.testing.assert_array_equal(dx_general[:, :6, :6, :], dx_fast)
    assert not dx_general[:, 6, :, :].any() and not dx_general[:, :, 6, :].any()


def test_global_avg_pool(backend, rng):
    x = rng.standard_normal((3, 5, 4, 6))
    layer = backend.to(GlobalAvgPool2d())
    y = backend.host(layer.forward(backend.asarray(x)))
    np.testing.assert_allclose(y, x.mean(axis=(1, 2)), rtol=1e-12)
    assert [r.tensor for r in check_layer(layer, backend.asarray(x), tol=1e-6)] == ["input"]


def test_global_avg_pool_batch_one_single_pixel(backend, rng):
    x = backend.asarray(rng.standard_normal((1, 1, 1, 4)))
    layer = backend.to(GlobalAvgPool2d())
    np.testing.assert_allclose(backend.host(layer.forward(x)), backend.host(x)[:, 0, 0, :])
    check_layer(layer, x, tol=1e-6)


@pytest.mark.parametrize("layer", [MaxPool2d(3, 1), AvgPool2d((2, 3)), GlobalAvgPool2d()])
def test_backward_is_idempotent_and_float32_stays_float32(backend, rng, layer):
    layer = backend.to(layer)
    x = backend.asarray(_distinct(rng, (2, 6, 7, 3)), dtype=np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32
    dy = backend.asarray(rng.standard_normal(y.shape), dtype=np.float32)
    dx1 = backend.host(layer.backward(dy)).copy()
    dx2 = backend.host(layer.backward(dy))
    assert dx2.dtype == np.float32
    np.testing.assert_array_equal(dx1, dx2)


@pytest.mark.parametrize("layer_class", [MaxPool2d, AvgPool2d])
def test_window_larger_than_input_is_an_error(layer_class):
    with pytest.raises(ValueError, match=rf"{layer_class.__name__}: pooling window 3x2 is "
                                         r"larger than the input 2x5"):
        layer_class((3, 2)).forward(np.zeros((1, 2, 5, 1), np.float32))


@pytest.mark.parametrize("layer", [MaxPool2d(2), AvgPool2d(2), GlobalAvgPool2d()])
@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((4, 4, 3), np.float32), r"expected 4-D input \(N, H, W, C\)"),
        (np.zeros((1, 4, 4, 3), np.int32), "expected floating-point input"),
        (np.full((1, 4, 4, 3), np.nan, np.float32), "input contains 48 NaN or Inf"),
    ],
)
def test_bad_input_is_an_error(layer, x, message):
    with pytest.raises(ValueError, match=f"{type(layer).__name__}: {message}"):
        layer.forward(x)


@pytest.mark.parametrize("layer_class", [MaxPool2d, AvgPool2d])
@pytest.mark.parametrize(
    "arguments, message",
    [((0,), "kernel_size must be an int >= 1"), ((2, 0), "stride must be an int >= 1"),
     ((2.5,), "kernel_size must be"), (((2, 2, 2),), "kernel_size must be")],
)
def test_bad_sizes_are_errors(layer_class, arguments, message):
    with pytest.raises(ValueError, match=f"{layer_class.__name__}: {message}"):
        layer_class(*arguments)


@pytest.mark.parametrize("layer", [MaxPool2d(2), AvgPool2d(2), GlobalAvgPool2d()])
def test_backward_errors(layer):
    with pytest.raises(RuntimeError, match="backward.*before forward"):
        layer.backward(np.zeros((1, 2, 2, 1), np.float32))
    layer.forward(np.zeros((1, 4, 4, 1), np.float32))
    with pytest.raises(ValueError, match="backward expected an upstream gradient of shape"):
        layer.backward(np.zeros((1, 3, 3, 1), np.float32))


@pytest.mark.parametrize("case", CASES)
def test_frozen_max_pool_takes_the_frozen_offsets(backend, rng, case):
    """``frozen_pattern`` (the winning offsets of an earlier forward) turns max-pooling into a
    fixed selection: same output on the same input, the frozen entries on a new input, and a
    backward that passes the numerical check even on inputs full of ties."""
    h, w, kernel, stride = case
    layer = backend.to(MaxPool2d(kernel, stride))
    x0 = rng.standard_normal((2, h, w, 3))
    y0 = backend.host(layer.forward(backend.asarray(x0)))
    layer.frozen_pattern = layer.pattern()
    np.testing.assert_array_equal(backend.host(layer.forward(backend.asarray(x0))), y0)
    # a new input: the output is x1 at the positions where x0 had its maxima (x1 - x0 is linear)
    x1 = rng.standard_normal((2, h, w, 3))
    y1 = backend.host(layer.forward(backend.asarray(x1)))
    y_diff = backend.host(layer.forward(backend.asarray(x1 - x0)))
    np.testing.assert_allclose(y1 - y0, y_diff, rtol=1e-12, atol=1e-12)
    results = check_layer(layer, backend.asarray(np.zeros((2, h, w, 3))), tol=1e-8)
    assert [r.tensor for r in results] == ["input"]
    with pytest.raises(ValueError, match="frozen pattern only fits"):
        layer.forward(backend.asarray(np.zeros((1, h, w, 3))))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("frozen", [False, True])
def test_max_pool_long_hand_backward_equals_the_fast_one(backend, rng, case, frozen):
    """implementation="reference" (a loop over output positions, argmax of each window) gives
    the dx of the default (offsets kept by forward, one strided slice per offset), ties too."""
    h, w, kernel, stride = case
    x = np.round(rng.standard_normal((2, h, w, 3)), 1)  # rounded: plenty of ties
    fast, reference = backend.to(MaxPool2d(kernel, stride)), backend.to(MaxPool2d(kernel, stride))
    reference.implementation = "reference"
    if frozen:
        fast.forward(backend.asarray(rng.standard_normal(x.shape)))
        fast.frozen_pattern = reference.frozen_pattern = fast.pattern()
    y = fast.forward(backend.asarray(x))
    np.testing.assert_array_equal(backend.host(reference.forward(backend.asarray(x))),
                                  backend.host(y))
    dy = backend.asarray(rng.standard_normal(y.shape))
    np.testing.assert_allclose(backend.host(reference.backward(dy)),
                               backend.host(fast.backward(dy)), rtol=1e-12, atol=1e-12)
    reference.implementation = "textbook"
    with pytest.raises(ValueError, match="MaxPool2d: implementation must be one of 'fast'"):
        reference.forward(backend.asarray(x))


@pytest.mark.parametrize("layer", [MaxPool2d(2), AvgPool2d(2), GlobalAvgPool2d()])
def test_upstream_gradient_dtype_must_match(layer):
    y = layer.forward(np.zeros((1, 4, 4, 1), np.float32))
    with pytest.raises(ValueError, match="upstream gradient dtype float64 does not match"):
        layer.backward(np.zeros(y.shape))


@st.composite
def pool_geometries(draw):
    """(N, H, W, C, kernel, stride or None, dtype, implementation): batch 0-3, non-square."""
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    return (draw(st.integers(0, 3)), draw(st.integers(kh, 6)), draw(st.integers(kw, 6)),
            draw(st.integers(1, 3)), (kh, kw), stride,
            draw(st.sampled_from([np.float32, np.float64])),
            draw(st.sampled_from(["fast", "reference"])))


@given(geometry=pool_geometries(), seed=st.integers(0, 2**16))
def test_property_pooling_matches_the_loop_oracle_and_the_gradient_check(geometry, seed):
    """Random geometries: max and average pooling equal the naive loops, keep the dtype, and
    pass the float64 gradient check (distinct inputs, so no max-pool ties; tolerance 1e-6)."""
    n, h, w, c, kernel, stride, dtype, implementation = geometry
    rng = np.random.default_rng(seed)
    x = _distinct(rng, (n, h, w, c)).astype(dtype)
    for layer_class, reduce in ((MaxPool2d, np.max), (AvgPool2d, np.mean)):
        layer = layer_class(kernel, stride)
        if layer_class is MaxPool2d:
            layer.implementation = implementation
        y = layer.forward(x)
        assert y.dtype == dtype
        if n:
            np.testing.assert_allclose(y, _naive_pool(x, kernel, stride, reduce), rtol=1e-5)
        dx = layer.backward(np.ones_like(y))
        assert dx.dtype == dtype and dx.shape == x.shape
        if n and dtype == np.float64:
            check_layer(layer, x, tol=1e-6, seed=seed)
