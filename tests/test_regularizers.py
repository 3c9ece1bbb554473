"""WeightDecay, and the shared regularizer interface of specnorm_np.regularizers."""

from __future__ import annotations

import numpy as np
import pytest

from specnorm_np import nn
from specnorm_np.gradcheck import check_function
from specnorm_np.regularizers import SpectralNormRegularizer, WeightDecay


def _model() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(2, 3, 3, rng=0, dtype=np.float64), nn.ReLU(),
                         nn.BatchNorm2d(3, dtype=np.float64), nn.Flatten(),
                         nn.Linear(3 * 2 * 2, 4, rng=1, dtype=np.float64))


def test_weight_decay_penalty_and_gradient(backend, rng):
    model = backend.to(_model())
    model.backward(model.forward(backend.asarray(rng.standard_normal((2, 4, 4, 2)))))
    before = {name: backend.host(p.grad).copy() for name, p in model.named_parameters()}
    decay = WeightDecay(lam=0.05)
    weights = [backend.host(p.data) for p in model.parameters() if p.regularize]
    expected = 0.5 * 0.05 * sum(float((w * w).sum()) for w in weights)
    assert np.isclose(decay.penalty(model), expected, rtol=1e-12)
    decay.add_grad(model)
    for name, param in model.named_parameters():
        change = backend.host(param.grad) - before[name]
        expected_change = 0.05 * backend.host(param.data) if param.regularize else 0 * change
        np.testing.assert_allclose(change, expected_change, atol=1e-14, err_msg=name)


def test_weight_decay_gradient_is_the_derivative_of_the_penalty(rng):
    model = _model()
    decay = WeightDecay(lam=0.2)
    for param in model.parameters():
        param.grad = None  # None counts as zero
    decay.add_grad(model.named_parameters())
    for param in model.parameters():
        if param.regularize:
            check_function(lambda: decay.penalty(model), param.data, param.grad, tol=1e-7)
        else:
            assert param.grad is None


def test_weight_decay_state_and_arguments():
    decay = WeightDecay()
    assert decay.lam == 1e-4 and decay.state_dict() == {}
    decay.load_state_dict({})
    assert decay.eval() is decay and decay.train() is decay
    with pytest.raises(KeyError, match="no state expected"):
        decay.load_state_dict({"0.weight.v": np.zeros(3)})
    with pytest.raises(ValueError, match="WeightDecay: lam must be a finite number >= 0"):
        WeightDecay(lam=float("nan"))


def test_regularizers_share_one_interface(rng):
    model = _model()
    for regularizer in (WeightDecay(1e-3), SpectralNormRegularizer(0.01)):
        for param in model.parameters():
            param.grad = np.zeros_like(param.data)
        assert regularizer.penalty(model) > 0
        regularizer.add_grad(model)
        changed = {name for name, p in model.named_parameters() if np.any(p.grad != 0)}
        assert changed == {"0.weight", "4.weight"}  # BatchNorm and biases untouched
        state = regularizer.state_dict()
        regularizer.load_state_dict(state)
        assert regularizer.eval() is regularizer
