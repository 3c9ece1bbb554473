"""Adversarial training step (the paper's Eq. 3): perturbation, loss mix, gradients."""

from __future__ import annotations

import numpy as np
import pytest

from specnorm_np import nn
from specnorm_np.adversarial import adversarial_loss_and_grad, l2_normalized_perturbation
from specnorm_np.gradcheck import check_function


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 8, rng=0, dtype=np.float64), nn.ReLU(),
                         nn.Linear(8, 3, rng=1, dtype=np.float64))


def _cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=np.float64), nn.ReLU(),
                         nn.Flatten(), nn.Linear(3 * 4 * 4, 3, rng=1, dtype=np.float64))


def _data(rng, shape, backend):
    x = backend.asarray(rng.standard_normal(shape))
    y = backend.asarray(rng.integers(0, 3, size=shape[0]))
    return x, y


@pytest.mark.parametrize("epsilon", [1.0, 0.3])
def test_perturbation_has_norm_epsilon_along_each_input_gradient(backend, rng, epsilon):
    model, loss = backend.to(_cnn()), nn.SoftmaxCrossEntropy()
    x, y = _data(rng, (5, 4, 4, 2), backend)
    _, dlogits = loss(model.forward(x), y)
    gradient = backend.host(model.backward(dlogits)).reshape(5, -1)
    result = adversarial_loss_and_grad(model, loss, x, y, epsilon=epsilon)
    eta = backend.host(result.perturbation)
    assert eta.shape == (5, 4, 4, 2)
    eta = eta.reshape(5, -1)
    np.testing.assert_allclose(np.linalg.norm(eta, axis=1), epsilon, rtol=1e-12)
    cosine = (eta * gradient).sum(axis=1) / (np.linalg.norm(eta, axis=1)
                                             * np.linalg.norm(gradient, axis=1))
    np.testing.assert_allclose(cosine, 1.0, rtol=1e-12)


def test_zero_input_gradient_gives_zero_perturbation(backend, rng):
    gradient = rng.standard_normal((3, 4))
    gradient[1] = 0.0
    eta = backend.host(l2_normalized_perturbation(backend.asarray(gradient), 2.0))
    assert np.all(np.isfinite(eta)) and np.all(eta[1] == 0)
    np.testing.assert_allclose(np.linalg.norm(eta[[0, 2]], axis=1), 2.0)


def test_loss_mixes_and_logits_are_the_clean_ones(backend, rng):
    model, loss = backend.to(_mlp()), nn.SoftmaxCrossEntropy()
    x, y = _data(rng, (4, 6), backend)
    clean_logits = backend.host(model.forward(x))
    result = adversarial_loss_and_grad(model, loss, x, y, epsilon=1.0, alpha=0.3)
    mixed, logits = result  # unpacks as (loss, clean logits)
    np.testing.assert_allclose(backend.host(logits), clean_logits, atol=1e-14)
    clean = loss(model.forward(x), y)[0]
    adversarial = loss(model.forward(x + result.perturbation), y)[0]
    assert np.isclose(result.clean_loss, clean) and np.isclose(result.adversarial_loss,
                                                               adversarial)
    assert np.isclose(mixed, 0.3 * clean + 0.7 * adversarial, rtol=1e-12)
    assert adversarial > clean  # the perturbation goes uphill


@pytest.mark.parametrize("make_model, shape", [(_mlp, (4, 6)), (_cnn, (3, 4, 4, 2))])
def test_parameter_gradients_check_numerically(backend, rng, make_model, shape):
    model, loss = backend.to(make_model()), nn.SoftmaxCrossEntropy()
    x, y = _data(rng, shape, backend)
    alpha = 0.4
    result = adversarial_loss_and_grad(model, loss, x, y, epsilon=0.7, alpha=alpha)
    eta = result.perturbation  # held constant, as in the paper
    grads = {name: p.grad.copy() for name, p in model.named_parameters()}

    def mixed() -> float:
        return (alpha * loss(model.forward(x), y)[0]
                + (1 - alpha) * loss(model.forward(x + eta), y)[0])

    assert np.isclose(mixed(), result.loss, rtol=1e-12)
    for name, param in model.named_parameters():
        check_function(mixed, param.data, grads[name], owner="adversarial", tensor=name,
                       tol=1e-6)


def test_alpha_one_is_the_plain_gradient(rng):
    model, loss = _mlp(), nn.SoftmaxCrossEntropy()
    x, y = rng.standard_normal((4, 6)), rng.integers(0, 3, size=4)
    plain_loss, dlogits = loss(model.forward(x), y)
    model.backward(dlogits)
    plain = [p.grad.copy() for p in model.parameters()]
    result = adversarial_loss_and_grad(model, loss, x, y, alpha=1.0)
    assert np.isclose(result.loss, plain_loss)
    for expected, param in zip(plain, model.parameters()):
        np.testing.assert_allclose(param.grad, expected, atol=1e-14)


def test_bad_arguments():
    model, loss = _mlp(), nn.SoftmaxCrossEntropy()
    x, y = np.zeros((2, 6)), np.zeros(2, dtype=int)
    with pytest.raises(ValueError, match="alpha must be a finite number in \\[0, 1\\]"):
        adversarial_loss_and_grad(model, loss, x, y, alpha=1.5)
    with pytest.raises(ValueError, match="epsilon must be a finite number >= 0"):
        adversarial_loss_and_grad(model, loss, x, y, epsilon=-1.0)
