"""Dropout: inverted scaling, seeding, evaluation mode, gradients."""

from __future__ import annotations

import numpy as np
import pytest

from specnorm_np import gradcheck, nn


def test_seeded_masks_are_reproducible_across_backends(backend) -> None:
    x = np.random.default_rng(0).standard_normal((6, 5, 4)).astype(np.float32)
    a = backend.to(nn.Dropout(0.4, seed=3))
    b = nn.Dropout(0.4, seed=3)
    ya1 = backend.host(a.forward(backend.asarray(x)))
    ya2 = backend.host(a.forward(backend.asarray(x)))
    yb1 = b.forward(x)
    np.testing.assert_array_equal(ya1, yb1)  # same seed, same first mask, on either backend
    assert not np.array_equal(ya1, ya2)  # the generator advances between batches
    c = nn.Dropout(0.4, seed=4)
    assert not np.array_equal(c.forward(x), yb1)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_keep_rate_and_inverted_scaling(backend, p: float) -> None:
    n = 200_000
    x = np.ones(n, dtype=np.float32)
    layer = nn.Dropout(p, seed=11)
    y = backend.host(layer.forward(backend.asarray(x)))
    assert y.dtype == np.float32
    kept = y != 0
    # the kept entries are scaled by exactly 1/(1 - p)
    np.testing.assert_allclose(y[kept], np.float32(1 / (1 - p)), rtol=1e-6)
    # keep rate 1 - p within 5 binomial standard deviations
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(kept.mean() - (1 - p)) < 5 * sigma
    assert abs(y.mean() - 1.0) < 5 * sigma / (1 - p)  # E[y] = x


def test_identity_in_eval_and_for_p_zero(backend) -> None:
    x = backend.asarray(np.random.default_rng(1).standard_normal((3, 4)))
    layer = nn.Dropout(0.5, seed=0).eval()
    state = layer._rng.bit_generator.state
    np.testing.assert_array_equal(backend.host(layer.forward(x)), backend.host(x))
    np.testing.assert_array_equal(backend.host(layer.backward(x)), backend.host(x))
    assert layer._rng.bit_generator.state == state  # evaluation draws no random numbers
    zero = nn.Dropout(0.0, seed=0)
    np.testing.assert_array_equal(backend.host(zero.forward(x)), backend.host(x))


def test_backward_uses_the_forward_mask(backend) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 7))
    layer = nn.Dropout(0.3, seed=5)
    y = backend.host(layer.forward(backend.asarray(x)))
    dy = rng.standard_normal((5, 7))
    dx1 = backend.host(layer.backward(backend.asarray(dy)))
    dx2 = backend.host(layer.backward(backend.asarray(dy)))
    np.testing.assert_array_equal(dx1, dx2)  # idempotent
    mask = y / x
    np.testing.assert_allclose(dx1, dy * mask, rtol=1e-12)
    assert set(np.round(np.unique(mask), 9)) <= {0.0, round(1 / 0.7, 9)}


@pytest.mark.parametrize("shape", [(1, 4), (3, 5, 2, 3)])
def test_gradients_in_training_mode(backend, shape: tuple[int, ...]) -> None:
    layer = nn.Dropout(0.5, seed=9)
    x = backend.asarray(np.random.default_rng(3).standard_normal(shape))
    gradcheck.check_layer(layer, x, tol=1e-7)
    # a model containing dropout is checkable too (gradcheck replays the generator state)
    model = backend.to(nn.Sequential(nn.Flatten(), nn.Dropout(0.5, seed=1),
                                     nn.Linear(int(np.prod(shape[1:])), 3, rng=0)))
    model.astype(np.float64)
    labels = backend.asarray(np.arange(shape[0]) % 3)
    gradcheck.check_model(model, x, labels, tol=1e-6)


def test_validation_and_errors() -> None:
    for bad in (1.0, -0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="Dropout: p must be a finite number in \\[0, 1\\)"):
            nn.Dropout(bad)
    layer = nn.Dropout(0.5)
    assert isinstance(layer._rng, np.random.Generator)
    with pytest.raises(RuntimeError, match="^Dropout: backward\\(\\) called before forward"):
        layer.backward(np.ones(3))
    with pytest.raises(ValueError, match="^Dropout: .*int64"):
        layer.forward(np.ones(3, dtype=np.int64))
    with pytest.raises(ValueError, match="^Dropout: input contains 1 NaN or Inf"):
        layer.forward(np.array([1.0, np.inf]))
    layer.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"^Dropout: backward expected .*\(2, 3\)"):
        layer.backward(np.ones((3, 2)))
    generator = np.random.default_rng(0)
    assert nn.Dropout(0.5, seed=generator)._rng is generator


def test_random_state_replays_the_same_masks() -> None:
    layer = nn.Dropout(0.5, seed=3)
    x = np.ones((4, 5))
    state = layer.random_state()
    first = layer.forward(x)
    assert not np.array_equal(layer.forward(x), first)  # the generator moved on
    layer.set_random_state(state)
    np.testing.assert_array_equal(layer.forward(x), first)
    # random_state returns a copy: drawing more does not change a state already taken
    taken = layer.random_state()
    layer.forward(x)
    assert taken != layer.random_state()
    layer.set_random_state(taken)
    assert layer.random_state() == taken
