"""im2col / col2im / the naive oracle (specnorm_np.ops.im2col)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.signal import correlate2d

from specnorm_np.ops import (
    as_pair,
    col2im,
    conv2d_naive,
    conv_output_hw,
    im2col,
)

# (H, W, C, kernel, stride, padding): non-square inputs and kernels, strides 1/2/(2,1), pads 0-2
GEOMETRIES = [
    (5, 7, 3, (3, 2), 1, 0),
    (5, 7, 2, (3, 2), 2, 1),
    (6, 5, 3, 3, (2, 1), 2),
    (4, 4, 1, 1, 1, 0),
    (3, 5, 2, (1, 3), (1, 2), (2, 0)),
    (7, 6, 2, 4, 3, 1),
]


def _inputs(rng, h, w, c, kernel, out_channels=4, n=2):
    kh, kw = as_pair(kernel, "kernel", "test", 1)
    x = rng.standard_normal((n, h, w, c))
    weight = rng.standard_normal((out_channels, kh, kw, c))
    return x, weight


def test_naive_oracle_matches_scipy_correlation(rng):
    """The oracle itself, checked against scipy's 2-D correlation channel by channel."""
    for h, w, c, kernel, stride, padding in GEOMETRIES:
        x, weight = _inputs(rng, h, w, c, kernel)
        bias = rng.standard_normal(weight.shape[0])
        (sh, sw), (ph, pw) = as_pair(stride, "s", "t", 1), as_pair(padding, "p", "t", 0)
        y = conv2d_naive(x, weight, bias, stride, padding)
        x_pad = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
        for n, o in itertools.product(range(x.shape[0]), range(weight.shape[0])):
            full = sum(correlate2d(x_pad[n, :, :, ch], weight[o, :, :, ch], mode="valid")
                       for ch in range(c))
            np.testing.assert_allclose(y[n, :, :, o], full[::sh, ::sw] + bias[o], atol=1e-12)


def test_naive_oracle_hand_example():
    # 3x3 image 0..8, a 2x2 kernel of ones: each output is the sum of a 2x2 window
    x = np.arange(9.0).reshape(1, 3, 3, 1)
    y = conv2d_naive(x, np.ones((1, 2, 2, 1)))
    np.testing.assert_array_equal(y[0, :, :, 0], [[0 + 1 + 3 + 4, 1 + 2 + 4 + 5],
                                                  [3 + 4 + 6 + 7, 4 + 5 + 7 + 8]])


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_patches_times_kernel_matrix_is_the_convolution(backend, rng, geometry):
    h, w, c, kernel, stride, padding = geometry
    x, weight = _inputs(rng, h, w, c, kernel)
    patches = im2col(backend.asarray(x), kernel, stride, padding)
    ho, wo = conv_output_hw((h, w), kernel, stride, padding)
    assert tuple(patches.shape) == (x.shape[0] * ho * wo, weight[0].size)
    y = backend.host(patches) @ weight.reshape(weight.shape[0], -1).T
    expected = conv2d_naive(x, weight, None, stride, padding)
    np.testing.assert_allclose(y.reshape(expected.shape), expected, rtol=1e-12, atol=1e-12)


def test_patch_row_is_the_window_in_kh_kw_c_order(rng):
    x = rng.standard_normal((2, 6, 5, 3))
    patches = im2col(x, (3, 2), stride=(2, 1), padding=1)
    ho, wo = conv_output_hw((6, 5), (3, 2), (2, 1), 1)
    x_pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    n, p, q = 1, 2, 3
    window = x_pad[n, 2 * p : 2 * p + 3, q : q + 2, :]
    np.testing.assert_array_equal(patches[(n * ho + p) * wo + q], window.reshape(-1))


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_col2im_is_the_adjoint_of_im2col(backend, rng, geometry):
    """⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩ for random x and c."""
    h, w, c, kernel, stride, padding = geometry
    x = rng.standard_normal((2, h, w, c))
    cols_shape = im2col(x, kernel, stride, padding).shape
    cols = rng.standard_normal(cols_shape)
    patches = backend.host(im2col(backend.asarray(x), kernel, stride, padding))
    back = backend.host(col2im(backend.asarray(cols), x.shape, kernel, stride, padding))
    assert back.shape == x.shape
    np.testing.assert_allclose((patches * cols).sum(), (x * back).sum(), rtol=1e-11)


def test_col2im_of_ones_counts_covering_windows():
    """Overlapping windows: col2im sums, so ones map to how many windows cover each pixel."""
    h, w, kernel, stride, padding = 7, 6, (3, 2), (2, 1), (1, 1)
    kh, kw = kernel
    ho, wo = conv_output_hw((h, w), kernel, stride, padding)
    counts = np.zeros((h + 2, w + 2))
    for p, q in itertools.product(range(ho), range(wo)):
        counts[2 * p : 2 * p + kh, q : q + kw] += 1
    cols = np.ones((ho * wo, kh * kw))
    back = col2im(cols, (1, h, w, 1), kernel, stride, padding)
    np.testing.assert_array_equal(back[0, :, :, 0], counts[1:-1, 1:-1])
    assert back.max() > 1  # the geometry really overlaps


def test_reused_buffers_give_fresh_results(rng):
    """Buffers passed back in must not leak values of the previous call."""
    kernel, stride, padding = (3, 2), 2, (2, 1)
    x1, x2 = rng.standard_normal((2, 2, 5, 6, 3))
    ho, wo = conv_output_hw((5, 6), kernel, stride, padding)
    out = np.full((2, ho, wo, 3, 2, 3), np.nan)
    im2col(x1, kernel, stride, padding, out=out)
    second = im2col(x2, kernel, stride, padding, out=out)
    np.testing.assert_array_equal(second, im2col(x2, kernel, stride, padding))


def test_one_by_one_kernel_is_a_reshape(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    np.testing.assert_array_equal(im2col(x, 1), x.reshape(-1, 5))


def test_float32_stays_float32(backend, rng):
    x = backend.asarray(rng.standard_normal((1, 5, 4, 2)), dtype=np.float32)
    patches = im2col(x, 3, 1, 1)
    assert patches.dtype == np.float32
    assert col2im(patches, x.shape, 3, 1, 1).dtype == np.float32


def test_kernel_larger_than_padded_input_is_an_error(rng):
    x = rng.standard_normal((1, 3, 4, 2))
    with pytest.raises(ValueError, match=r"im2col: kernel 6x3 is larger than the padded input 5x6"):
        im2col(x, (6, 3), 1, 1)
    with pytest.raises(ValueError, match="conv2d_naive"):
        conv2d_naive(x, rng.standard_normal((1, 5, 5, 2)))


@pytest.mark.parametrize(
    "name, value", [("kernel_size", 0), ("stride", 0), ("stride", -1), ("padding", -1),
                    ("kernel_size", 2.0), ("stride", True), ("padding", (1, 2, 3))]
)
def test_bad_sizes_are_errors(rng, name, value):
    arguments = {"kernel_size": 2, "stride": 1, "padding": 0, name: value}
    with pytest.raises(ValueError, match=f"im2col: {name} must be an int"):
        im2col(rng.standard_normal((1, 4, 4, 1)), **arguments)


def test_col2im_wrong_cols_shape_is_an_error(rng):
    with pytest.raises(ValueError, match="col2im: expected cols of shape"):
        col2im(rng.standard_normal((10, 4)), (1, 4, 4, 1), 2)


@given(n=st.integers(0, 3), h=st.integers(1, 6), w=st.integers(1, 6), c=st.integers(1, 3),
       kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_property_im2col_is_the_convolution_and_col2im_its_adjoint(n, h, w, c, kernel, stride,
                                                                   padding, dtype, seed):
    """Random geometries (batch 0-3, non-square, strides, paddings, dtypes): im2col times the
    kernel matrix is the naive convolution, and ⟨im2col(x), cols⟩ = ⟨x, col2im(cols)⟩."""
    if kernel[0] > h + 2 * padding[0] or kernel[1] > w + 2 * padding[1]:
        with pytest.raises(ValueError, match="larger than the padded input"):
            im2col(np.zeros((n, h, w, c), dtype), kernel, stride, padding)
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    weight = rng.standard_normal((2, *kernel, c)).astype(dtype)
    patches = im2col(x, kernel, stride, padding)
    assert patches.dtype == dtype
    expected = conv2d_naive(x, weight, None, stride, padding)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose((patches @ weight.reshape(2, -1).T).reshape(expected.shape),
                               expected, rtol=rtol, atol=rtol)
    cols = rng.standard_normal(patches.shape)
    back = col2im(cols, x.shape, kernel, stride, padding)
    assert back.shape == x.shape
    np.testing.assert_allclose((patches.astype(np.float64) * cols).sum(),
                               (x.astype(np.float64) * back).sum(), rtol=1e-9, atol=1e-9)
