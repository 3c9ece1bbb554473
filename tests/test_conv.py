"""Conv2d and the functional convolutions (specnorm_np.nn.conv)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from specnorm_np.gradcheck import check_layer
from specnorm_np.nn import Conv2d
from specnorm_np.nn import conv as conv_module
from specnorm_np.nn.conv import (
    conv2d,
    conv2d_input_grad,
    conv2d_input_grad_col2im,
    conv2d_weight_grad,
)
from specnorm_np.ops import conv2d_naive, conv_output_hw, im2col

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


@pytest.mark.parametrize("method", ["convolution", "col2im"])
@pytest.mark.parametrize("case", GRADCHECK_CASES)
def test_gradients_pass_numerical_check(backend, rng, case, method):
    n, h, w, cin, cout, kernel, stride, padding = case
    layer = _layer(backend, cin, cout, kernel, stride, padding)
    layer.input_grad_method = method
    x = backend.asarray(rng.standard_normal((n, h, w, cin)))
    results = check_layer(layer, x, tol=1e-6)
    assert [r.tensor for r in results] == ["input", "weight", "bias"]


@pytest.mark.parametrize("method", ["convolution", "col2im"])
def test_batch_chunking_gives_the_same_results(backend, rng, monkeypatch, method):
    """Chunks of 1-2 images over a batch of 5 (a short last chunk), twice (buffer reuse)."""
    kernel, stride, padding = (3, 2), (1, 2), 1
    layer = _layer(backend, 3, 4, kernel, stride, padding)
    layer.input_grad_method = method
    weight, bias = backend.host(layer.weight.data), backend.host(layer.bias.data)
    patches_per_image = 6 * 4 * 3 * 2 * 3 * 8  # H'·W'·kh·kw·in float64 values
    monkeypatch.setattr(conv_module, "CHUNK_BYTES", 2 * patches_per_image + 7)
    assert conv_module._batch_chunks(5, patches_per_image) == (2, [(0, 2), (2, 4), (4, 5)])
    for _ in range(2):
        x = rng.standard_normal((5, 6, 7, 3))
        y = layer.forward(backend.asarray(x))
        np.testing.assert_allclose(backend.host(y), conv2d_naive(x, weight, bias, stride,
                                                                 padding), rtol=1e-12)
        dy = rng.standard_normal(y.shape)
        dx = layer.backward(backend.asarray(dy))
        np.testing.assert_allclose(backend.host(dx), conv2d_input_grad_col2im(
            dy, weight, (6, 7), stride, padding), rtol=1e-12, atol=1e-12)
        whole = dy.reshape(-1, 4).T @ im2col(x, kernel, stride, padding)  # all patches at once
        np.testing.assert_allclose(backend.host(layer.weight.grad), whole.reshape(weight.shape),
                                   rtol=1e-12)
    assert layer._workspace["patches.patches"][1].shape[0] == 2  # capacity: 2 images
    check_layer(layer, backend.asarray(rng.standard_normal((5, 6, 7, 3))), tol=1e-6,
                max_elements=300)


def test_gradients_without_bias(backend, rng):
    layer = _layer(backend, 2, 3, (2, 3), 2, 1, bias=False)
    x = backend.asarray(rng.standard_normal((2, 5, 6, 2)))
    assert [r.tensor for r in check_layer(layer, x, tol=1e-6)] == ["input", "weight"]


def test_fast_input_gradient_equals_col2im_route(rng):
    """The flipped-kernel convolution equals col2im(dy_mat @ W_mat) over many geometries."""
    checked = 0
    for h, w, kh, kw, stride, padding in itertools.product(
        (1, 4, 5), (3, 6), (1, 2, 3), (1, 3), (1, 2, 3, (2, 1), (1, 3)), (0, 1, 2, (3, 0))
    ):
        try:
            ho, wo = conv_output_hw((h, w), (kh, kw), stride, padding)
        except ValueError:
            continue
        weight = rng.standard_normal((3, kh, kw, 2))
        dy = rng.standard_normal((2, ho, wo, 3))
        fast = conv2d_input_grad(dy, weight, (h, w), stride, padding, method="convolution",
                                 workspace={})
        reference = conv2d_input_grad_col2im(dy, weight, (h, w), stride, padding)
        automatic = conv2d_input_grad(dy, weight, (h, w), stride, padding)
        np.testing.assert_allclose(fast, reference, rtol=1e-12, atol=1e-12,
                                   err_msg=f"{(h, w, kh, kw, stride, padding)}")
        np.testing.assert_allclose(automatic, reference, rtol=1e-12, atol=1e-12)
        checked += 1
    assert checked > 300


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 0), ((2, 1), 2)])
def test_functional_forms_are_adjoint_and_consistent(backend, rng, stride, padding):
    """⟨conv2d(x), dy⟩ = ⟨x, conv2d_input_grad(dy)⟩; the weight gradient matches the layer's."""
    x_host = rng.standard_normal((2, 6, 5, 3))
    layer = _layer(backend, 3, 4, (3, 2), stride, padding, bias=False)
    x = backend.asarray(x_host)
    y = conv2d(x, layer.weight.data, stride, padding)
    dy_host = rng.standard_normal(y.shape)
    dy = backend.asarray(dy_host)
    dx = conv2d_input_grad(dy, layer.weight.data, (6, 5), stride, padding)
    np.testing.assert_allclose((backend.host(y) * dy_host).sum(),
                               (x_host * backend.host(dx)).sum(), rtol=1e-11)
    np.testing.assert_allclose(backend.host(y), backend.host(layer.forward(x)), rtol=1e-12)
    layer_dx = layer.backward(dy)
    np.testing.assert_allclose(backend.host(layer_dx), backend.host(dx), rtol=1e-12)
    weight_grad = conv2d_weight_grad(x, dy, (3, 2), stride, padding)
    np.testing.assert_allclose(backend.host(weight_grad), backend.host(layer.weight.grad),
                               rtol=1e-12)


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
    assert all(array.dtype == np.float32 for _, array in layer._workspace.values())


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


def test_functional_shape_errors(rng):
    x, weight = rng.standard_normal((1, 5, 5, 3)), rng.standard_normal((2, 3, 3, 3))
    with pytest.raises(ValueError, match="conv2d: x has 2 channels, weight expects 3"):
        conv2d(x[..., :2], weight)
    with pytest.raises(ValueError, match="conv2d: expected x"):
        conv2d(x[0], weight)
    with pytest.raises(ValueError, match="conv2d_input_grad: dy of shape"):
        conv2d_input_grad(rng.standard_normal((1, 4, 4, 2)), weight, (5, 5))
    with pytest.raises(ValueError, match="conv2d_input_grad: method must be"):
        conv2d_input_grad(rng.standard_normal((1, 3, 3, 2)), weight, (5, 5), method="fft")
    with pytest.raises(ValueError, match="conv2d_weight_grad: expected dy of shape"):
        conv2d_weight_grad(x, rng.standard_normal((1, 4, 4, 2)), 3)
