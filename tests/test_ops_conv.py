"""The convolution's products (specnorm_np.ops.conv): the reference route and the fast route."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from specnorm_np.nn import Conv2d
from specnorm_np.ops import Workspace, conv2d_naive, conv_output_hw, im2col
from specnorm_np.ops import conv as conv_module
from specnorm_np.ops.conv import (
    conv2d,
    conv2d_input_grad,
    conv2d_input_grad_reference,
    conv2d_reference,
    conv2d_weight_grad,
    conv2d_weight_grad_reference,
)


def _layer(backend, cin, cout, kernel, stride, padding, bias=True):
    layer = Conv2d(cin, cout, kernel, stride, padding, bias, rng=0, dtype=np.float64)
    if layer.bias is not None:
        layer.bias.data = np.random.default_rng(1).standard_normal(cout)
    return backend.to(layer)


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
        np.testing.assert_allclose(backend.host(dx), conv2d_input_grad_reference(
            dy, weight, (6, 7), stride, padding), rtol=1e-12, atol=1e-12)
        whole = dy.reshape(-1, 4).T @ im2col(x, kernel, stride, padding)  # all patches at once
        np.testing.assert_allclose(backend.host(layer.weight.grad), whole.reshape(weight.shape),
                                   rtol=1e-12)
    assert layer._workspace.arrays()["patches.patches"].shape[0] == 2  # capacity: 2 images


def test_fast_input_gradient_equals_the_reference_route(rng):
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
        reference = conv2d_input_grad_reference(dy, weight, (h, w), stride, padding)
        for method in ("convolution", "col2im", "auto"):
            fast = conv2d_input_grad(dy, weight, (h, w), stride, padding, method=method,
                                     workspace=Workspace())
            np.testing.assert_allclose(fast, reference, rtol=1e-12, atol=1e-12,
                                       err_msg=f"{method} {(h, w, kh, kw, stride, padding)}")
        checked += 1
    assert checked > 300


def test_one_workspace_across_geometries_leaks_nothing(rng):
    """One workspace reused by calls of different strides and paddings on the same shapes."""
    workspace = Workspace()
    weight = rng.standard_normal((3, 3, 3, 2))
    for stride, padding in [(1, 1), (2, 1), (1, 2), (1, 1), (2, 0), (1, 0), (1, 1)]:
        x = rng.standard_normal((2, 6, 6, 2))
        y = conv2d(x, weight, stride, padding, workspace=workspace)
        np.testing.assert_allclose(y, conv2d_naive(x, weight, None, stride, padding),
                                   rtol=1e-12, atol=1e-12)
        dy = rng.standard_normal(y.shape)
        dx = conv2d_input_grad(dy, weight, (6, 6), stride, padding, method="convolution",
                               workspace=workspace)
        np.testing.assert_allclose(dx, conv2d_input_grad_reference(dy, weight, (6, 6), stride,
                                                                   padding), atol=1e-12)


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


def test_empty_batch_gives_empty_outputs_and_a_zero_weight_gradient(backend, rng):
    weight = backend.asarray(rng.standard_normal((4, 3, 2, 3)))
    x = backend.asarray(np.zeros((0, 5, 6, 3)))
    for forward in (conv2d, conv2d_reference):
        assert tuple(forward(x, weight, 2, 1).shape) == (0, 3, 4, 4)
    dy = backend.asarray(np.zeros((0, 3, 4, 4)))
    for weight_grad in (conv2d_weight_grad, conv2d_weight_grad_reference):
        grad = backend.host(weight_grad(x, dy, (3, 2), 2, 1))
        assert grad.shape == (4, 3, 2, 3) and not grad.any()
    for method in ("convolution", "col2im"):
        assert tuple(conv2d_input_grad(dy, weight, (5, 6), 2, 1, method=method).shape) == (
            0, 5, 6, 3)


def test_functional_shape_errors(rng):
    x, weight = rng.standard_normal((1, 5, 5, 3)), rng.standard_normal((2, 3, 3, 3))
    with pytest.raises(ValueError, match="conv2d: x has 2 channels, weight expects 3"):
        conv2d(x[..., :2], weight)
    with pytest.raises(ValueError, match="conv2d: expected x"):
        conv2d(x[0], weight)
    with pytest.raises(ValueError, match="conv2d_input_grad: dy of shape"):
        conv2d_input_grad(rng.standard_normal((1, 4, 4, 2)), weight, (5, 5))
    with pytest.raises(ValueError, match="conv2d_input_grad: method must be one of 'auto'"):
        conv2d_input_grad(rng.standard_normal((1, 3, 3, 2)), weight, (5, 5), method="fft")
    with pytest.raises(ValueError, match="conv2d_weight_grad: expected dy of shape"):
        conv2d_weight_grad(x, rng.standard_normal((1, 4, 4, 2)), 3)
    with pytest.raises(ValueError, match="conv2d_reference: x has 2 channels"):
        conv2d_reference(x[..., :2], weight)


# ---- property-based: random geometries against the naive loop oracle ------------------------
@st.composite
def geometries(draw):
    """(N, H, W, in, out, (kh, kw), (sh, sw), (ph, pw)) with the kernel fitting the padded input."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 7))
    w = draw(st.integers(max(1, kw - 2 * pw), 7))
    return (draw(st.integers(0, 3)), h, w, draw(st.integers(1, 3)), draw(st.integers(1, 4)),
            (kh, kw), (draw(st.integers(1, 3)), draw(st.integers(1, 3))), (ph, pw))


@given(geometry=geometries(), seed=st.integers(0, 2**16))
def test_property_every_route_equals_the_naive_convolution(geometry, seed):
    n, h, w, cin, cout, kernel, stride, padding = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, cin))
    weight = rng.standard_normal((cout, *kernel, cin))
    expected = conv2d_naive(x, weight, None, stride, padding)
    np.testing.assert_allclose(conv2d(x, weight, stride, padding), expected, atol=1e-12)
    np.testing.assert_allclose(conv2d_reference(x, weight, stride, padding), expected,
                               atol=1e-12)
    dy = rng.standard_normal(expected.shape)
    # the adjoint identity ⟨conv(x), dy⟩ = ⟨x, dx⟩ pins dx down independently of col2im
    dx_reference = conv2d_input_grad_reference(dy, weight, (h, w), stride, padding)
    np.testing.assert_allclose((expected * dy).sum(), (x * dx_reference).sum(), atol=1e-10)
    for method in ("convolution", "col2im"):
        dx = conv2d_input_grad(dy, weight, (h, w), stride, padding, method=method)
        np.testing.assert_allclose(dx, dx_reference, atol=1e-12)
    # ⟨conv(x; W), dy⟩ is linear in W with gradient dW: compare with one random direction
    dw = conv2d_weight_grad(x, dy, kernel, stride, padding)
    np.testing.assert_allclose(dw, conv2d_weight_grad_reference(x, dy, kernel, stride, padding),
                               atol=1e-12)
    direction = rng.standard_normal(weight.shape)
    np.testing.assert_allclose((conv2d_naive(x, direction, None, stride, padding) * dy).sum(),
                               (dw * direction).sum(), atol=1e-10)
