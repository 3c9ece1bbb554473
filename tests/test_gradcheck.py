"""The gradient checker catches wrong backward passes and says where."""

from __future__ import annotations

import re

import numpy as np
import pytest

from specnorm_np import gradcheck, nn
from specnorm_np.gradcheck import GradcheckError


class WrongInputGradient(nn.Linear):
    """dx is off by 2% in one entry."""

    def backward(self, dy):
        dx = super().backward(dy)
        dx[1, 2] *= 1.02
        return dx


class WrongWeightGradient(nn.Linear):
    """The weight gradient is transposed-and-scaled wrong: uses 0.5·dyᵀx."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.weight.grad = 0.5 * self.weight.grad
        return dx


def test_wrong_input_gradient_is_caught_with_location_and_values(backend) -> None:
    rng = np.random.default_rng(0)
    layer = backend.to(WrongInputGradient(4, 3, rng=1).astype(np.float64))
    x = backend.asarray(rng.standard_normal((3, 4)))
    with pytest.raises(GradcheckError) as info:
        gradcheck.check_layer(layer, x)
    message = str(info.value)
    found = re.search(
        r"gradient check failed for WrongInputGradient / input: relative error (\S+) > tol "
        r"1.0e-05 at index \(1, 2\): analytic (\S+) vs numerical (\S+) \(elements mode\)",
        message,
    )
    assert found, message
    analytic, numerical = float(found[2]), float(found[3])
    assert analytic == pytest.approx(1.02 * numerical, rel=1e-6)
    # x is restored after the check
    np.testing.assert_array_equal(backend.host(x), np.random.default_rng(0).standard_normal((3, 4)))


def test_wrong_parameter_gradient_is_caught(backend) -> None:
    layer = backend.to(WrongWeightGradient(3, 2, rng=0).astype(np.float64))
    x = backend.asarray(np.random.default_rng(1).standard_normal((4, 3)))
    with pytest.raises(GradcheckError, match="WrongWeightGradient / weight: relative error"):
        gradcheck.check_layer(layer, x)
    # input-only check passes: the bug is only in the weight gradient
    results = gradcheck.check_layer(layer, x, check_params=False)
    assert [r.tensor for r in results] == ["input"] and results[0].max_error < 1e-8


def test_correct_layer_reports_results() -> None:
    layer = nn.Linear(3, 2, rng=0).astype(np.float64)
    results = gradcheck.check_layer(layer, np.random.default_rng(2).standard_normal((5, 3)))
    assert [r.tensor for r in results] == ["input", "weight", "bias"]
    assert all(r.max_error < 1e-7 and r.mode == "elements" for r in results)
    assert results[1].checked == 6
    assert "Linear / weight: max relative error" in str(results[1])


def quadratic(rng: np.random.Generator, n: int):
    """f(x) = ½ xᵀAx + bᵀx with gradient Ax + b, for a symmetric A."""
    a = rng.standard_normal((n, n))
    a = a + a.T
    b = rng.standard_normal(n)
    x = rng.standard_normal(n)
    return (lambda: float(0.5 * x @ a @ x + b @ x)), x, a @ x + b


def test_directional_mode() -> None:
    rng = np.random.default_rng(3)
    f, x, grad = quadratic(rng, 50)
    result = gradcheck.check_function(f, x, grad, mode="directional", directions=8)
    assert result.mode == "directional" and result.checked == 8 and result.max_error < 1e-8
    wrong = grad.copy()
    wrong[::2] *= -1  # wrong in many entries: every random projection sees it
    with pytest.raises(GradcheckError, match=r"function / x: .* at direction \d+: analytic"):
        gradcheck.check_function(f, x, wrong, mode="directional", directions=8)


def test_auto_mode_samples_large_tensors() -> None:
    rng = np.random.default_rng(4)
    f, x, grad = quadratic(rng, 300)
    result = gradcheck.check_function(f, x, grad, max_elements=40, directions=5)
    assert result.mode == "elements+directional" and result.checked == 45
    small = gradcheck.check_function(f, x, grad, max_elements=1000)
    assert small.mode == "elements" and small.checked == 300


def test_numerical_gradient_and_relative_error() -> None:
    x = np.array([1.0, -2.0, 0.5])
    num = gradcheck.numerical_gradient(lambda: float((x**3).sum()), x)
    np.testing.assert_allclose(num, 3 * x**2, rtol=1e-9)
    np.testing.assert_array_equal(x, [1.0, -2.0, 0.5])
    err = gradcheck.relative_error(np.array([1.0, 1e-9]), np.array([1.1, 0.0]), floor=1e-4)
    np.testing.assert_allclose(err, [0.1 / 2.1, 1e-9 / 1e-4])


def test_argument_errors() -> None:
    x32 = np.ones(3, dtype=np.float32)
    with pytest.raises(ValueError, match="gradcheck: layer / x must be float64, got float32"):
        gradcheck.check_function(lambda: 0.0, x32, x32, owner="layer")
    with pytest.raises(GradcheckError, match=r"analytic gradient has shape \(2,\), expected"):
        gradcheck.check_function(lambda: 0.0, np.ones(3), np.ones(2))
    strided = np.ones((4, 4))[:, ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        gradcheck.check_function(lambda: 0.0, strided, strided)


def test_check_model_whole_network(backend) -> None:
    rng = np.random.default_rng(5)
    model = nn.Sequential(nn.Linear(4, 6, rng=0), nn.BatchNorm1d(6), nn.LeakyReLU(0.1),
                          nn.Linear(6, 3, rng=1))
    model = backend.to(model.astype(np.float64))
    x = backend.asarray(rng.standard_normal((5, 4)))
    labels = backend.asarray(rng.integers(0, 3, 5))
    results = gradcheck.check_model(model, x, labels, tol=1e-6)
    assert [r.tensor for r in results] == ["input", "0.weight", "0.bias", "1.weight",
                                           "1.bias", "3.weight", "3.bias"]

    broken = nn.Sequential(nn.Linear(4, 6, rng=0), nn.ReLU(), WrongWeightGradient(6, 3, rng=1))
    broken = backend.to(broken.astype(np.float64))
    with pytest.raises(GradcheckError, match="Sequential / 2.weight"):
        gradcheck.check_model(broken, x, labels, check_input=False)


def test_checks_leave_running_statistics_unchanged(backend) -> None:
    rng = np.random.default_rng(6)
    model = backend.to(nn.Sequential(nn.Linear(3, 4, rng=0), nn.BatchNorm1d(4)).astype(np.float64))
    before = [backend.host(b) for _, b in model.named_buffers()]
    x = backend.asarray(rng.standard_normal((5, 3)))
    gradcheck.check_layer(model, x, tol=1e-6)
    gradcheck.check_model(model, x, backend.asarray(rng.integers(0, 4, 5)), tol=1e-6)
    for old, (name, new) in zip(before, model.named_buffers()):
        np.testing.assert_array_equal(old, backend.host(new), err_msg=name)


class NanInputGradient(nn.Linear):
    """dx is multiplied by NaN (every entry NaN): NaN never compares greater than tol."""

    def backward(self, dy):
        return super().backward(dy) * np.nan


class InfWeightGradient(nn.Linear):
    """One weight-gradient entry is +Inf."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.weight.grad[0, 1] = np.inf
        return dx


class NanAtLargeInput(nn.Module):
    """y = x², but NaN once any entry exceeds 1: the numerical gradient near 1 is NaN."""

    def forward(self, x):
        self._cache = x
        return np.where(x > 1.0, np.nan, x * x)

    def backward(self, dy):
        return 2 * self._cache * dy


@pytest.mark.parametrize("mode", ["auto", "elements", "directional"])
def test_non_finite_analytic_gradients_fail(mode) -> None:
    x = np.random.default_rng(7).standard_normal((3, 4))
    with pytest.raises(GradcheckError,
                       match=r"NanInputGradient / input: the analytic gradient has 12 NaN"):
        gradcheck.check_layer(NanInputGradient(4, 2, rng=0, dtype=np.float64), x, mode=mode)
    with pytest.raises(GradcheckError,
                       match=r"InfWeightGradient / weight: the analytic gradient has 1 NaN or "
                             r"Inf value.*the first inf at index \(0, 1\)"):
        gradcheck.check_layer(InfWeightGradient(4, 2, rng=0, dtype=np.float64), x,
                              check_input=False, mode=mode)


@pytest.mark.parametrize("mode", ["elements", "directional"])
def test_non_finite_numerical_gradients_fail(mode) -> None:
    x = np.array([[0.5, 1.0 - 1e-7, -0.3]])  # x + eps crosses 1 at index (0, 1)
    match = "numerical gradient has 1 NaN" if mode == "elements" else "numerical directional"
    with pytest.raises(GradcheckError, match=match):
        gradcheck.check_layer(NanAtLargeInput(), x, mode=mode, eps=1e-5)
    gradcheck.check_layer(NanAtLargeInput(), x * 0.5, mode=mode)  # away from 1 it passes


@pytest.mark.parametrize("option, value", [
    ("eps", 0), ("eps", -1e-5), ("eps", float("nan")), ("eps", "1e-5"), ("eps", None),
    ("tol", float("nan")), ("tol", 0), ("tol", -1.0), ("tol", float("inf")), ("tol", "big"),
    ("floor", 0.0), ("max_elements", 0), ("directions", 2.5),
])
def test_bad_options_are_value_errors(option, value) -> None:
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match=f"^gradcheck: {option} must be"):
        gradcheck.check_layer(nn.Linear(3, 2, rng=0, dtype=np.float64), x, **{option: value})
    with pytest.raises(ValueError, match=f"^gradcheck: {option} must be"):
        gradcheck.check_function(lambda: float(x.sum()), x, np.ones_like(x), **{option: value})


def test_a_wrong_gradient_cannot_pass_through_any_tolerance_setting() -> None:
    """The old hole: tol=NaN made every comparison False, so a wrong gradient passed."""
    x = np.random.default_rng(8).standard_normal((3, 4))
    with pytest.raises(ValueError, match="tol must be a finite number > 0"):
        gradcheck.check_layer(WrongInputGradient(4, 3, rng=0, dtype=np.float64), x,
                              tol=float("nan"))


def test_stochastic_layers_are_replayed_through_their_public_random_state(monkeypatch) -> None:
    """check_layer replays Dropout by random_state()/set_random_state(), not its _rng."""
    calls = []
    original = nn.Dropout.set_random_state

    def spy(self, state):
        calls.append(state)
        original(self, state)

    monkeypatch.setattr(nn.Dropout, "set_random_state", spy)
    layer = nn.Sequential(nn.Linear(4, 5, rng=0, dtype=np.float64), nn.Dropout(0.5, seed=1))
    gradcheck.check_layer(layer, np.random.default_rng(9).standard_normal((3, 4)), tol=1e-6)
    assert len(calls) > 10 and all(state == calls[0] for state in calls)
