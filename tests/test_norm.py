"""BatchNorm1d / BatchNorm2d: PyTorch's statistics, train and eval gradients, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from specnorm_np import gradcheck, nn


def make(kind: str, channels: int, **kwargs) -> nn.Module:
    return (nn.BatchNorm1d if kind == "1d" else nn.BatchNorm2d)(channels, **kwargs)


def randomise(layer: nn.Module, rng: np.random.Generator, backend) -> None:
    """Non-trivial γ, β and running statistics (so every term of the formulas matters)."""
    c = layer.num_features
    layer.weight.data = backend.asarray(rng.uniform(0.5, 2.0, c), layer.weight.data.dtype)
    layer.bias.data = backend.asarray(rng.standard_normal(c), layer.bias.data.dtype)
    layer.running_mean = backend.asarray(rng.standard_normal(c), layer.running_mean.dtype)
    layer.running_var = backend.asarray(rng.uniform(0.3, 3.0, c), layer.running_var.dtype)


CASES = [("1d", (2, 3)), ("1d", (7, 5)), ("2d", (1, 3, 5, 2)), ("2d", (3, 2, 3, 4)),
         ("2d", (2, 1, 1, 3))]


@pytest.mark.parametrize(("kind", "shape"), CASES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gradients(backend, kind: str, shape: tuple[int, ...], mode: str) -> None:
    rng = np.random.default_rng(sum(shape))
    layer = make(kind, shape[-1]).astype(np.float64)
    layer = backend.to(layer)
    randomise(layer, rng, backend)
    layer.train(mode == "train")
    # scale and shift the input so the normalisation does real work
    x = backend.asarray(3.0 * rng.standard_normal(shape) + 1.5)
    results = gradcheck.check_layer(layer, x, tol=1e-6)
    assert [r.tensor for r in results] == ["input", "weight", "bias"]


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_eval_gradients_batch_one(backend, kind: str) -> None:
    shape = (1, 4) if kind == "1d" else (1, 1, 1, 4)
    rng = np.random.default_rng(5)
    layer = backend.to(make(kind, 4).astype(np.float64))
    randomise(layer, rng, backend)
    layer.eval()
    gradcheck.check_layer(layer, backend.asarray(rng.standard_normal(shape)), tol=1e-6)


def pytorch_formulas(batches: list[np.ndarray], momentum: float, eps: float):
    """Running statistics and train-mode outputs computed directly from PyTorch's definitions."""
    c = batches[0].shape[-1]
    mean, var = np.zeros(c), np.ones(c)
    outputs = []
    for x in batches:
        rows = x.reshape(-1, c).astype(np.float64)
        mu, biased = rows.mean(axis=0), rows.var(axis=0)
        unbiased = rows.var(axis=0, ddof=1)
        outputs.append(((rows - mu) / np.sqrt(biased + eps)).reshape(x.shape))
        mean = (1 - momentum) * mean + momentum * mu
        var = (1 - momentum) * var + momentum * unbiased
    return mean, var, outputs


@pytest.mark.parametrize(("kind", "shape"), [("1d", (6, 3)), ("2d", (2, 3, 5, 4))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_statistics_and_eval_match_pytorch_formulas(backend, kind, shape, dtype) -> None:
    rng = np.random.default_rng(0)
    momentum, eps = 0.3, 1e-3
    layer = backend.to(make(kind, shape[-1], eps=eps, momentum=momentum, dtype=dtype))
    batches = [(rng.standard_normal(shape) * (i + 1) + i).astype(dtype) for i in range(3)]
    outputs = [backend.host(layer.forward(backend.asarray(x))) for x in batches]
    mean, var, expected = pytorch_formulas(batches, momentum, eps)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for got, want in zip(outputs, expected):  # γ = 1, β = 0 at initialisation
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
    assert layer.running_mean.dtype == dtype and layer.running_var.dtype == dtype
    np.testing.assert_allclose(backend.host(layer.running_mean), mean, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(backend.host(layer.running_var), var, rtol=rtol, atol=rtol)

    # evaluation uses the running statistics, with γ and β
    gamma, beta = rng.uniform(0.5, 2, shape[-1]), rng.standard_normal(shape[-1])
    layer.weight.data = backend.asarray(gamma, dtype)
    layer.bias.data = backend.asarray(beta, dtype)
    layer.eval()
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    before = backend.host(layer.running_mean)
    y = backend.host(layer.forward(backend.asarray(x)))
    np.testing.assert_allclose(y, gamma * (x - mean) / np.sqrt(var + eps) + beta,
                               rtol=10 * rtol, atol=10 * rtol)
    np.testing.assert_array_equal(backend.host(layer.running_mean), before)  # unchanged


def test_matches_torch_batchnorm2d_when_installed() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5, 3, 6))  # (N, H, W, C)
    dy = rng.standard_normal(x.shape)
    ours = nn.BatchNorm2d(6, momentum=0.2).astype(np.float64)
    theirs = torch.nn.BatchNorm2d(6, momentum=0.2).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.linspace(0.5, 1.5, 6, dtype=torch.float64))
    ours.weight.data = theirs.weight.detach().numpy().copy()
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)  # NCHW
    ty = theirs(tx)
    ty.backward(torch.tensor(dy.transpose(0, 3, 1, 2)))
    y = ours.forward(x)
    dx = ours.backward(dy)
    np.testing.assert_allclose(y, ty.detach().numpy().transpose(0, 2, 3, 1), atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy().transpose(0, 2, 3, 1), atol=1e-12)
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), atol=1e-12)


def test_train_output_is_normalised_per_channel() -> None:
    x = np.random.default_rng(2).standard_normal((8, 4, 4, 3)) * [1.0, 10.0, 0.1] + [5, -3, 0]
    y = nn.BatchNorm2d(3).astype(np.float64).forward(x)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-12)
    batch_var = x.var(axis=(0, 1, 2))  # variance 1 up to eps: σ² / (σ² + eps)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), batch_var / (batch_var + 1e-5),
                               rtol=1e-12)
    assert y.var(axis=(0, 1, 2))[2] < 1 - 1e-4  # eps matters for the small-scale channel


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_backward_idempotent_and_follows_forward_mode(backend, mode: str) -> None:
    rng = np.random.default_rng(3)
    layer = backend.to(nn.BatchNorm2d(3))
    randomise(layer, rng, backend)
    layer.train(mode == "train")
    x = backend.asarray(rng.standard_normal((2, 3, 4, 3)).astype(np.float32))
    dy = backend.asarray(rng.standard_normal((2, 3, 4, 3)).astype(np.float32))
    layer.forward(x)
    layer.train(mode != "train")  # switching mode after forward does not change backward
    dx1 = backend.host(layer.backward(dy))
    grads1 = [backend.host(p.grad) for p in layer.parameters()]
    dx2 = backend.host(layer.backward(dy))
    np.testing.assert_array_equal(dx1, dx2)
    for g, p in zip(grads1, layer.parameters()):
        np.testing.assert_array_equal(g, backend.host(p.grad))
        assert p.grad.dtype == np.float32
    assert dx1.dtype == np.float32
    if mode == "train":  # dx is orthogonal to constants per channel: the mean is removed
        np.testing.assert_allclose(dx1.sum(axis=(0, 1, 2)), 0, atol=1e-4)


def test_state_dict_saves_running_statistics() -> None:
    layer = nn.BatchNorm1d(3)
    layer.forward(np.random.default_rng(4).standard_normal((5, 3)).astype(np.float32))
    state = layer.state_dict()
    assert set(state) == {"weight", "bias", "running_mean", "running_var"}
    other = nn.BatchNorm1d(3)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.running_var, layer.running_var)
    assert not np.allclose(other.running_var, 1)


def test_momentum_extremes() -> None:
    x = np.random.default_rng(5).standard_normal((6, 2))
    frozen = nn.BatchNorm1d(2, momentum=0.0).astype(np.float64)
    frozen.forward(x)
    np.testing.assert_array_equal(frozen.running_mean, 0)
    np.testing.assert_array_equal(frozen.running_var, 1)
    latest = nn.BatchNorm1d(2, momentum=1.0).astype(np.float64)
    latest.forward(x)
    np.testing.assert_allclose(latest.running_mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(latest.running_var, x.var(axis=0, ddof=1), rtol=1e-12)


@pytest.mark.parametrize(
    ("kind", "x", "message"),
    [
        ("1d", np.ones((4, 3, 1), dtype=np.float32), r"expected 2-D input \(N, C\)"),
        ("2d", np.ones((4, 3), dtype=np.float32), r"expected 4-D input \(N, H, W, C\)"),
        ("1d", np.ones((4, 5), dtype=np.float32), r"expected 3 channels .*got shape \(4, 5\)"),
        ("2d", np.ones((2, 2, 2, 2), dtype=np.float32), r"expected 3 channels"),
        ("2d", np.ones((2, 2, 2, 3), dtype=np.uint8), "floating-point input .*uint8"),
        ("1d", np.array([[0.0, np.nan, 1.0], [1.0, 2.0, 3.0]]), "1 NaN or Inf"),
        ("1d", np.ones((1, 3), dtype=np.float32), "more than one value per channel"),
        ("2d", np.ones((1, 1, 1, 3), dtype=np.float32), "more than one value per channel"),
        ("2d", np.ones((2, 2, 2, 3), dtype=np.float64), "dtype float64 does not match .*float32"),
    ],
)
def test_bad_input(backend, kind: str, x: np.ndarray, message: str) -> None:
    layer = backend.to(make(kind, 3))
    name = "BatchNorm1d" if kind == "1d" else "BatchNorm2d"
    with pytest.raises(ValueError, match=f"^{name}: .*{message}"):
        layer.forward(backend.asarray(x))


def test_backward_errors() -> None:
    layer = nn.BatchNorm2d(2)
    with pytest.raises(RuntimeError, match="^BatchNorm2d: backward\\(\\) called before forward"):
        layer.backward(np.ones((2, 1, 1, 2)))
    layer.forward(np.random.default_rng(0).standard_normal((2, 3, 3, 2)).astype(np.float32))
    with pytest.raises(ValueError, match=r"backward expected .*\(2, 3, 3, 2\).*\(2, 3, 2, 3\)"):
        layer.backward(np.ones((2, 3, 2, 3), dtype=np.float32))


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="BatchNorm2d: num_features must be an int >= 1, got 0"):
        nn.BatchNorm2d(0)
    with pytest.raises(ValueError, match="BatchNorm1d: eps must be a finite number > 0, got 0"):
        nn.BatchNorm1d(3, eps=0)
    with pytest.raises(ValueError,
                       match="BatchNorm1d: momentum must be a finite number in \\[0, 1\\]"):
        nn.BatchNorm1d(3, momentum=1.5)
    for dtype in (np.int32, np.bool_, "U3"):
        with pytest.raises(ValueError, match="BatchNorm2d: dtype must be a floating-point dtype"):
            nn.BatchNorm2d(3, dtype=dtype)
    layer = nn.BatchNorm2d(4)
    assert not layer.weight.regularize and not layer.bias.regularize
    assert repr(layer) == "BatchNorm2d(4, eps=1e-05, momentum=0.1)"


@pytest.mark.parametrize(("kind", "shape"), CASES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_long_hand_backward_equals_the_fast_one(backend, kind, shape, mode) -> None:
    """implementation="reference" (the chain rule node by node) vs the collapsed formula."""
    rng = np.random.default_rng(7)
    layers = [backend.to(make(kind, shape[-1]).astype(np.float64)) for _ in range(2)]
    for layer in layers:
        randomise(layer, np.random.default_rng(1), backend)
        layer.train(mode == "train")
    fast, reference = layers
    reference.implementation = "reference"
    x = backend.asarray(3.0 * rng.standard_normal(shape) + 1.5)
    dy = backend.asarray(rng.standard_normal(shape))
    fast.forward(x)
    reference.forward(x)
    np.testing.assert_allclose(backend.host(reference.backward(dy)),
                               backend.host(fast.backward(dy)), rtol=1e-10, atol=1e-12)
    for p, q in zip(reference.parameters(), fast.parameters()):
        np.testing.assert_allclose(backend.host(p.grad), backend.host(q.grad), rtol=1e-10,
                                   atol=1e-12)
    gradcheck.check_layer(reference, x, tol=1e-6)


@pytest.mark.parametrize("scale", [1e20, -1e20, 3e25])
def test_float32_statistics_do_not_overflow(scale) -> None:
    """Inputs around ±1e20: their float32 squares overflow; the output is still normalised."""
    rng = np.random.default_rng(8)
    x = (scale * (1.0 + rng.standard_normal((16, 3, 3, 4)))).astype(np.float32)
    layer = nn.BatchNorm2d(4)
    with np.errstate(all="raise"):  # no overflow warning may escape either
        y = layer.forward(x)
        dx = layer.backward(rng.standard_normal(x.shape).astype(np.float32))
    rows = x.reshape(-1, 4).astype(np.float64)
    expected = (rows - rows.mean(axis=0)) / np.sqrt(rows.var(axis=0) + 1e-5)
    assert y.dtype == np.float32 and np.isfinite(dx).all()
    np.testing.assert_allclose(y.reshape(-1, 4), expected, rtol=1e-4, atol=1e-4)
    assert np.isfinite(layer.running_mean).all()
    assert np.isinf(layer.running_var).all()  # ~1e40 exceeds float32, as in PyTorch


def test_ordinary_float32_inputs_keep_float32_statistics(monkeypatch) -> None:
    """The float64 fallback is not taken for ordinary inputs (their float32 result stays)."""
    import specnorm_np.nn.norm as norm_module

    def not_taken(rows):
        raise AssertionError("float64 statistics used for ordinary inputs")

    monkeypatch.setattr(norm_module, "_statistics_in_float64", not_taken)
    x = (1e15 * np.random.default_rng(9).standard_normal((8, 5))).astype(np.float32)
    nn.BatchNorm1d(5).forward(x)  # (1e15)² = 1e30 still fits in float32
    with pytest.raises(AssertionError, match="float64 statistics"):
        nn.BatchNorm1d(5).forward(x * np.float32(1e5))


def test_upstream_gradient_dtype_must_match() -> None:
    layer = nn.BatchNorm1d(3)
    layer.forward(np.ones((4, 3), np.float32) * np.arange(4, dtype=np.float32)[:, None])
    with pytest.raises(ValueError, match="BatchNorm1d: upstream gradient dtype float64"):
        layer.backward(np.ones((4, 3)))


@given(n=st.integers(0, 3), hw=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       channels=st.integers(1, 4), train=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_property_batchnorm2d_normalises_and_passes_the_gradient_check(n, hw, channels, train,
                                                                       dtype, seed) -> None:
    """Random batch sizes (0-3), spatial sizes and dtypes: the output dtype is kept, training
    output has zero mean per channel, the long-hand and fast backward agree, and float64
    gradients pass the checker (tolerance 1e-6, random upstream gradient)."""
    rng = np.random.default_rng(seed)
    shape = (n, *hw, channels)
    if train and n * hw[0] * hw[1] < 2:
        return  # training statistics need two values per channel (an error, tested above)
    layer = nn.BatchNorm2d(channels, dtype=dtype).train(train)
    layer.running_var = rng.uniform(0.5, 2.0, channels).astype(dtype)
    x = (2.0 * rng.standard_normal(shape) + 1.0).astype(dtype)
    y = layer.forward(x)
    assert y.dtype == dtype and y.shape == shape
    if train and n:
        np.testing.assert_allclose(y.reshape(-1, channels).mean(axis=0), 0,
                                   atol=1e-5 if dtype == np.float32 else 1e-12)
    dy = rng.standard_normal(shape).astype(dtype)
    fast_dx = layer.backward(dy)
    layer.implementation = "reference"
    np.testing.assert_allclose(layer.backward(dy), fast_dx,
                               rtol=1e-3 if dtype == np.float32 else 1e-9,
                               atol=1e-4 if dtype == np.float32 else 1e-10)
    if dtype == np.float64 and n:
        gradcheck.check_layer(layer, x, tol=1e-6, seed=seed)
