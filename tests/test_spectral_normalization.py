"""SpectralNorm (SN-GAN) wrapper: forward uses W/σ, backward through σ(W) checked numerically."""

from __future__ import annotations

import numpy as np
import pytest

from specnorm_np import nn
from specnorm_np.gradcheck import check_layer
from specnorm_np.spectral import SpectralNorm


def _sigma_max(weight: np.ndarray) -> float:
    return float(np.linalg.svd(weight.reshape(weight.shape[0], -1), compute_uv=False)[0])


@pytest.mark.parametrize("make_layer, input_shape", [
    (lambda: nn.Linear(5, 4, rng=0, dtype=np.float64), (3, 5)),
    (lambda: nn.Conv2d(2, 3, (3, 2), stride=2, padding=1, rng=0, dtype=np.float64), (2, 5, 6, 2)),
    (lambda: nn.Conv2d(3, 2, 1, bias=False, rng=1, dtype=np.float64), (1, 3, 3, 3)),
])
def test_backward_passes_the_numerical_check(backend, rng, make_layer, input_shape):
    wrapped = backend.to(SpectralNorm(make_layer(), seed=2))
    x = backend.asarray(rng.standard_normal(input_shape))
    for _ in range(3):  # move the vectors away from their start (training mode)
        wrapped.forward(x)
    wrapped.eval()  # u, v now held constant, as the backward assumes
    results = check_layer(wrapped, x, tol=1e-6)
    assert {r.tensor for r in results} >= {"input", "layer.weight"}


def test_correct_coefficient_matters(rng):
    """The weight gradient differs from the naive G/σ and from (G − ⟨G, uvᵀ⟩uvᵀ)/σ."""
    wrapped = SpectralNorm(nn.Linear(6, 5, rng=0, dtype=np.float64))
    x = rng.standard_normal((4, 6))
    y = wrapped.forward(x)
    dy = rng.standard_normal(y.shape)
    wrapped.backward(dy)
    grad = wrapped.layer.weight.grad.copy()
    sigma, u, v = float(wrapped.sigma), wrapped.u, wrapped.v
    raw = dy.T @ x  # G = dL/dW̄
    naive = raw / sigma
    rank_one = np.outer(u, v)
    wrong = (raw - (raw * rank_one).sum() * rank_one) / sigma
    assert not np.allclose(grad, naive, atol=1e-8)
    assert not np.allclose(grad, wrong, atol=1e-8)
    normalized = wrapped.layer.weight.data / sigma
    np.testing.assert_allclose(grad, (raw - (raw * normalized).sum() * rank_one) / sigma,
                               atol=1e-12)


def test_training_drives_the_normalized_spectral_norm_to_one(backend, rng):
    layer = nn.Conv2d(3, 4, 3, padding=1, rng=0, dtype=np.float64)
    wrapped = backend.to(SpectralNorm(layer, power_iterations=1, seed=0))
    x = backend.asarray(rng.standard_normal((1, 4, 4, 3)))
    original = backend.host(wrapped.layer.weight.data).copy()
    for _ in range(200):
        y = wrapped.forward(x)
    weight = backend.host(wrapped.layer.weight.data)
    assert np.isclose(float(wrapped.sigma), _sigma_max(weight), rtol=1e-8)
    assert np.isclose(_sigma_max(weight / float(wrapped.sigma)), 1.0, rtol=1e-8)
    # the output is the layer's output with W/σ, and the stored weight is untouched
    plain = nn.Conv2d(3, 4, 3, padding=1, rng=0, dtype=np.float64)
    plain.weight.data = weight / float(wrapped.sigma)
    plain.bias.data = backend.host(wrapped.layer.bias.data)
    np.testing.assert_allclose(backend.host(y), plain.forward(backend.host(x)), atol=1e-12)
    np.testing.assert_array_equal(weight, original)


def test_eval_mode_freezes_the_vectors_and_state_round_trips(backend, rng):
    wrapped = backend.to(SpectralNorm(nn.Linear(5, 3, rng=0, dtype=np.float64), seed=1))
    x = backend.asarray(rng.standard_normal((2, 5)))
    wrapped.forward(x)
    state = wrapped.state_dict()
    assert set(state) == {"layer.weight", "layer.bias", "u", "v"}
    wrapped.eval()
    for _ in range(3):
        wrapped.forward(x)
    after = wrapped.state_dict()
    assert all(np.array_equal(after[k], state[k]) for k in state)
    wrapped.train()
    wrapped.forward(x)
    assert not np.array_equal(wrapped.state_dict()["v"], state["v"])
    wrapped.load_state_dict(state)
    assert all(np.array_equal(wrapped.state_dict()[k], state[k]) for k in state)


def test_rejects_layers_without_a_weight():
    with pytest.raises(ValueError, match="SpectralNorm: expected a layer"):
        SpectralNorm(nn.ReLU())
    with pytest.raises(ValueError, match="power_iterations must be an int >= 1"):
        SpectralNorm(nn.Linear(2, 2), power_iterations=0)
