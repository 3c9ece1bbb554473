"""Operator norms of convolutions: power iteration, FFT, dense matrix and LinearOperator agree."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.linalg import svds

from specnorm_np import nn
from specnorm_np.nn.conv import conv2d_input_grad
from specnorm_np.ops.im2col import conv2d_naive
from specnorm_np.spectral import (
    conv_as_dense_matrix,
    conv_as_linear_operator,
    conv_operator_norm,
    conv_power_iteration,
    conv_singular_values_fft,
    layer_spectra,
    random_unit_vector,
)

# (kernel shape (out, kh, kw, in), input (H, W), stride, padding)
ZERO_PADDING_CASES = [
    ((3, 3, 3, 2), (5, 6), 1, 0),
    ((3, 3, 3, 2), (5, 6), 1, 1),
    ((4, 3, 3, 2), (6, 5), 2, 1),
    ((2, 3, 2, 3), (7, 5), (2, 1), (0, 1)),
    ((3, 1, 1, 4), (3, 4), 1, 0),
    ((2, 4, 4, 1), (6, 6), 3, 2),
]


def _naive_circular(kernel: np.ndarray, image: np.ndarray) -> np.ndarray:
    """y[p, q, o] = Σ K[o, i, j, c]·x[(p + i - top) mod H, (q + j - left) mod W, c], by loops."""
    out, kh, kw, _ = kernel.shape
    height, width, _ = image.shape
    top, left = (kh - 1) // 2, (kw - 1) // 2
    y = np.zeros((height, width, out))
    for p in range(height):
        for q in range(width):
            for i in range(kh):
                for j in range(kw):
                    pixel = image[(p + i - top) % height, (q + j - left) % width]
                    y[p, q] += kernel[:, i, j, :] @ pixel
    return y


@pytest.mark.parametrize("shape, input_hw, stride, padding", ZERO_PADDING_CASES)
def test_dense_matrix_is_the_convolution_and_its_transpose_the_adjoint(
    rng, shape, input_hw, stride, padding
):
    kernel = rng.standard_normal(shape)
    dense = conv_as_dense_matrix(kernel, input_hw, stride, padding)
    x = rng.standard_normal((1, *input_hw, shape[3]))
    expected = conv2d_naive(x, kernel, stride=stride, padding=padding)  # independent loop oracle
    assert dense.shape == (expected.size, x.size)
    np.testing.assert_allclose(dense @ x.ravel(), expected.ravel(), atol=1e-12)
    dy = rng.standard_normal(expected.shape)
    np.testing.assert_allclose(dense.T @ dy.ravel(),
                               conv2d_input_grad(dy, kernel, input_hw, stride, padding).ravel(),
                               atol=1e-12)


@pytest.mark.parametrize("shape, input_hw, stride, padding", ZERO_PADDING_CASES)
def test_power_iteration_matches_dense_svd(rng, shape, input_hw, stride, padding):
    kernel = rng.standard_normal(shape)
    expected = np.linalg.svd(conv_as_dense_matrix(kernel, input_hw, stride, padding),
                             compute_uv=False)[0]
    estimate = conv_operator_norm(kernel, input_hw, stride, padding, iterations=3000)
    assert abs(estimate - expected) <= 1e-6 * expected
    # the reshaped-kernel σ is the same number only for a 1x1 kernel (A = I ⊗ K), else not
    matrix_sigma = np.linalg.svd(kernel.reshape(shape[0], -1), compute_uv=False)[0]
    assert np.isclose(matrix_sigma, expected, rtol=1e-3) == (shape[1:3] == (1, 1))


@pytest.mark.parametrize("shape, input_hw", [
    ((3, 3, 3, 2), (5, 6)), ((2, 2, 2, 3), (4, 4)), ((4, 1, 3, 4), (3, 5)), ((1, 3, 3, 1), (3, 3)),
])
def test_fft_singular_values_match_the_dense_circulant(rng, shape, input_hw):
    kernel = rng.standard_normal(shape)
    dense = conv_as_dense_matrix(kernel, input_hw, boundary="circular")
    image = rng.standard_normal((*input_hw, shape[3]))
    np.testing.assert_allclose(dense @ image.ravel(), _naive_circular(kernel, image).ravel(),
                               atol=1e-12)
    expected = np.linalg.svd(dense, compute_uv=False)
    values = conv_singular_values_fft(kernel, input_hw)
    assert values.shape == (input_hw[0] * input_hw[1] * min(shape[0], shape[3]),)
    np.testing.assert_allclose(values, expected[: values.size], rtol=1e-10, atol=1e-12)


def test_sqrt_taps_relation_for_stride_one(rng):
    for shape, input_hw in [((4, 3, 3, 3), (8, 8)), ((3, 3, 5, 2), (6, 7)), ((5, 2, 2, 5), (5, 5))]:
        kernel = rng.standard_normal(shape)
        taps = shape[1] * shape[2]
        matrix_sigma = np.linalg.svd(kernel.reshape(shape[0], -1), compute_uv=False)[0]
        circular = conv_singular_values_fft(kernel, input_hw)[0]
        # circular: σ(W_mat) <= ‖A‖ <= √(kh·kw)·σ(W_mat)
        assert matrix_sigma <= circular * (1 + 1e-12)
        assert circular <= np.sqrt(taps) * matrix_sigma * (1 + 1e-12)
        for padding in (0, 1, 2):
            zero = np.linalg.svd(conv_as_dense_matrix(kernel, input_hw, 1, padding),
                                 compute_uv=False)[0]
            assert zero <= np.sqrt(taps) * matrix_sigma * (1 + 1e-12)
    # equality of the upper bound: every tap the same rank-1 matrix, input a constant image
    tap = np.outer(rng.standard_normal(2), rng.standard_normal(3))
    kernel = np.broadcast_to(tap[:, None, None, :], (2, 3, 3, 3)).copy()
    matrix_sigma = np.linalg.svd(kernel.reshape(2, -1), compute_uv=False)[0]
    assert np.isclose(conv_singular_values_fft(kernel, (6, 6))[0], 3 * matrix_sigma)


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1)])
def test_power_iteration_agrees_with_svds_at_32x32(rng, stride, padding):
    kernel = rng.standard_normal((4, 3, 3, 3))
    operator = conv_as_linear_operator(kernel, (32, 32), stride, padding)
    assert operator.shape == (((32 + 2 * padding - 3) // stride + 1) ** 2 * 4, 32 * 32 * 3)
    top = svds(operator, k=1, return_singular_vectors=False, random_state=0)[0]
    estimate = conv_operator_norm(kernel, (32, 32), stride, padding, iterations=1000)
    assert abs(estimate - top) <= 1e-5 * top


def test_linear_operator_matches_dense_matrix(rng):
    kernel = rng.standard_normal((3, 3, 2, 2))
    dense = conv_as_dense_matrix(kernel, (5, 4), 2, 1)
    operator = conv_as_linear_operator(kernel, (5, 4), 2, 1)
    x, y = rng.standard_normal(dense.shape[1]), rng.standard_normal(dense.shape[0])
    np.testing.assert_allclose(operator.matvec(x), dense @ x, atol=1e-12)
    np.testing.assert_allclose(operator.rmatvec(y), dense.T @ y, atol=1e-12)
    columns = rng.standard_normal((dense.shape[1], 3))
    np.testing.assert_allclose(operator.matmat(columns), dense @ columns, atol=1e-12)


def test_conv_power_iteration_on_the_device_backend(backend, rng):
    host = rng.standard_normal((3, 3, 3, 2))
    kernel = backend.asarray(host)
    v = random_unit_vector((1, 6, 5, 2), kernel, seed=0)
    sigma, u, v = conv_power_iteration(kernel, v, (6, 5), 2, 1, iterations=800)
    assert type(u) is type(kernel) and u.shape == (1, 3, 3, 3)
    expected = np.linalg.svd(conv_as_dense_matrix(host, (6, 5), 2, 1), compute_uv=False)[0]
    assert np.isclose(float(sigma), expected, rtol=1e-8)


def test_layer_spectra_side_by_side(rng):
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=np.float64), nn.ReLU(),
        nn.Conv2d(3, 4, 3, stride=2, rng=1, dtype=np.float64), nn.Flatten(),
        nn.Linear(4 * 2 * 2, 5, rng=2, dtype=np.float64),
    )
    before = layer_spectra(model)
    assert [row["name"] for row in before] == ["0.weight", "2.weight", "4.weight"]
    assert before[0]["operator_norm"] is None and before[0]["input_hw"] is None
    model.forward(rng.standard_normal((2, 6, 6, 2)))
    rows = layer_spectra(model, iterations=2000)
    for row, layer in zip(rows, (model[0], model[2], model[4])):
        weight = layer.weight.data
        sigma = np.linalg.svd(weight.reshape(weight.shape[0], -1), compute_uv=False)[0]
        assert np.isclose(row["matrix_sigma"], sigma)
    for row, layer, hw in ((rows[0], model[0], (6, 6)), (rows[1], model[2], (6, 6))):
        dense = conv_as_dense_matrix(layer.weight.data, hw, layer.stride, layer.padding)
        assert row["kind"] == "conv" and row["input_hw"] == hw
        assert np.isclose(row["operator_norm"], np.linalg.svd(dense, compute_uv=False)[0])
        assert np.isclose(row["taps_bound"], 3 * row["matrix_sigma"])
    assert rows[2]["kind"] == "linear" and rows[2]["operator_norm"] == rows[2]["matrix_sigma"]


def test_bad_arguments_are_named():
    kernel = np.ones((2, 3, 3, 1))
    with pytest.raises(ValueError, match="conv_singular_values_fft: kernel 3x3 is larger"):
        conv_singular_values_fft(kernel, (2, 5))
    with pytest.raises(ValueError, match="boundary='circular' pads by wrapping"):
        conv_as_dense_matrix(kernel, (4, 4), padding=1, boundary="circular")
    with pytest.raises(ValueError, match="conv_operator_norm: Conv2d has no input size yet"):
        conv_operator_norm(nn.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match="input_hw=\\(H, W\\) is required"):
        conv_operator_norm(kernel)
    with pytest.raises(ValueError, match="expected a conv kernel"):
        conv_operator_norm(np.ones((2, 3)), (4, 4))
