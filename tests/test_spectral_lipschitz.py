"""Network Lipschitz bounds, measured local constants and certified radii."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from specnorm_np import nn
from specnorm_np.models import build_model
from specnorm_np.spectral import (
    SpectralNorm,
    certified_accuracy,
    certified_radius,
    lipschitz_upper_bound,
    local_lipschitz,
    logit_margins,
)
from specnorm_np.spectral.lipschitz import max_pool_constant


def _jacobian(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Exact J(x) (classes, inputs) of one example: rows are backward passes of basis vectors."""
    model = copy.deepcopy(model).astype(np.float64).eval()
    classes = model.forward(x[None].astype(np.float64)).shape[1]
    rows = []
    for k in range(classes):
        model.forward(x[None].astype(np.float64))
        rows.append(model.backward(np.eye(classes)[k][None]).ravel())
    return np.array(rows)


def _small_cnn(seed: int = 0, batch_norm: bool = False) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    layers = [nn.Conv2d(2, 4, 3, padding=1, rng=rng)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.LeakyReLU(0.1), nn.MaxPool2d(3, 1), nn.Conv2d(4, 3, 2, stride=2, rng=rng),
               nn.ReLU(), nn.AvgPool2d(2, 1), nn.Flatten(), nn.Dropout(0.3),
               nn.Linear(3, 5, rng=rng)]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_measured_le_dense_jacobian_le_certified(rng, batch_norm):
    model = _small_cnn(batch_norm=batch_norm)
    x = rng.standard_normal((6, 7, 6, 2)).astype(np.float32)
    if batch_norm:  # give BatchNorm non-trivial running statistics
        model.train()
        for _ in range(5):
            model.forward(x * 3 + 1)
        model.layers[1].weight.data[:] = rng.uniform(0.2, 3.0, 4)
    model.eval()
    bound = lipschitz_upper_bound(model, (7, 6), x=x, local_iterations=100)
    measured = local_lipschitz(model, x, iterations=100)
    for i in range(x.shape[0]):
        true_local = np.linalg.svd(_jacobian(model, x[i]), compute_uv=False)[0]
        assert measured[i] == pytest.approx(true_local, rel=1e-6)
        assert true_local <= bound.upper
    assert bound.measured == pytest.approx(measured.max())
    assert bound.measured <= bound.upper <= bound.unfolded_upper * (1 + 1e-12)
    if batch_norm:  # folding BatchNorm into the conv is strictly tighter here
        assert bound.upper < bound.unfolded_upper * 0.999
    # random pairs never exceed the certificate
    a, b = x[:3].astype(np.float64), x[3:].astype(np.float64)
    clone = copy.deepcopy(model).astype(np.float64).eval()
    ratios = np.linalg.norm(clone.forward(a) - clone.forward(b), axis=1) / np.linalg.norm(
        (a - b).reshape(3, -1), axis=1)
    assert ratios.max() <= bound.upper


def test_layer_constants(rng):
    model = _small_cnn()
    bound = lipschitz_upper_bound(model, (7, 6, 2))
    kinds = {row.kind: row for row in bound.layers}
    assert kinds["leakyrelu"].upper == 1.0
    assert kinds["maxpool"].upper == pytest.approx(3.0)  # 3x3 windows, stride 1: √9
    assert kinds["flatten"].upper == kinds["dropout"].upper == 1.0
    # the average pool's interval contains the norm of its dense matrix (one channel)
    pool = nn.AvgPool2d(2, 1)
    basis = np.eye(9).reshape(9, 3, 3, 1)
    dense = pool.forward(basis).reshape(9, -1).T
    exact = np.linalg.svd(dense, compute_uv=False)[0]
    row = lipschitz_upper_bound(nn.Sequential(pool), (3, 3, 1)).layers[0]
    assert row.lower <= exact <= row.upper
    gap = lipschitz_upper_bound(nn.Sequential(nn.GlobalAvgPool2d()), (4, 5, 2)).upper
    assert gap == pytest.approx(1 / np.sqrt(20))


@pytest.mark.parametrize("size, kernel, stride, expected", [
    ((6, 6), (3, 3), (1, 1), 9), ((8, 8), (2, 2), (2, 2), 1), ((7, 5), (3, 2), (2, 1), 4),
    ((5, 5), (3, 3), (2, 2), 4)])
def test_max_pool_constant_is_attained(rng, size, kernel, stride, expected):
    assert max_pool_constant(size, kernel, stride) == pytest.approx(np.sqrt(expected))
    # raise the pixel that is the maximum of the most windows: every window's output moves by δ
    pool = nn.MaxPool2d(kernel, stride)
    x = rng.uniform(0, 1, (1, *size, 1))
    counts = np.zeros(size)
    ho, wo = (size[0] - kernel[0]) // stride[0] + 1, (size[1] - kernel[1]) // stride[1] + 1
    for p in range(ho):
        for q in range(wo):
            counts[p * stride[0]: p * stride[0] + kernel[0],
                   q * stride[1]: q * stride[1] + kernel[1]] += 1
    a, b = np.unravel_index(counts.argmax(), size)
    x[0, a, b, 0] = 2.0
    moved = x.copy()
    moved[0, a, b, 0] += 0.5
    ratio = np.linalg.norm(pool.forward(moved) - pool.forward(x)) / 0.5
    assert ratio == pytest.approx(np.sqrt(expected))


def test_spectral_norm_layers_and_models(rng):
    model = nn.Sequential(SpectralNorm(nn.Conv2d(1, 4, 3, padding=1, rng=0)), nn.ReLU(),
                          nn.Flatten(), SpectralNorm(nn.Linear(64, 10, rng=1)))
    model.forward(rng.standard_normal((2, 4, 4, 1)).astype(np.float32))
    model.eval()
    bound = lipschitz_upper_bound(model, (4, 4))
    wrapper = model.layers[-1]
    weight = wrapper.layer.weight.data.astype(np.float64)
    used = float(wrapper.u @ (wrapper.layer.weight.data @ wrapper.v))  # σ of the eval forward
    expected = np.linalg.svd(weight, compute_uv=False)[0] / used  # W/σ, σ not yet converged
    assert bound.layers[-1].lower <= expected <= bound.layers[-1].upper
    assert bound.layers[0].lower > bound.layers[0].reshaped_sigma  # true norm above σ(W_mat)
    vgg = build_model("vgg-bn", (8, 8, 1), seed=0, width=4)
    assert lipschitz_upper_bound(vgg, (8, 8)).upper > 1.0


def test_certified_radius_holds_and_is_not_beaten_for_a_linear_model(rng):
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3, rng=0, dtype=np.float64))
    x = rng.standard_normal((40, 2, 3, 2))
    logits = model.forward(x)
    y = rng.integers(0, 3, 40)
    radius = certified_radius(model, x, y)
    sigma = np.linalg.svd(model.layers[1].weight.data, compute_uv=False)[0]
    margins = logit_margins(model, x, y)
    np.testing.assert_allclose(radius, np.maximum(margins, 0) / (np.sqrt(2) * sigma), rtol=1e-8)
    weight = model.layers[1].weight.data
    for i in np.flatnonzero(radius > 0):  # the smallest flipping perturbation is larger
        others = [j for j in range(3) if j != y[i]]
        smallest = min((logits[i, y[i]] - logits[i, j]) / np.linalg.norm(weight[y[i]] - weight[j])
                       for j in others)
        assert smallest >= radius[i] * (1 - 1e-9)
    accuracy = certified_accuracy(model, x, y, [0.0, 0.01, 0.1, 1.0])
    assert accuracy[0] == pytest.approx(np.mean(logits.argmax(1) == y))
    assert np.all(np.diff(accuracy) <= 0)
    assert certified_accuracy(model, x, y, 0.0) == pytest.approx(accuracy[0])


def test_errors_name_the_function(rng):
    class Square(nn.Module):
        def forward(self, x):
            return x * x

    with pytest.raises(ValueError, match="lipschitz_upper_bound: no Lipschitz constant"):
        lipschitz_upper_bound(nn.Sequential(Square()), (2, 2, 1))
    with pytest.raises(ValueError, match="lipschitz_upper_bound: input_hw"):
        lipschitz_upper_bound(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (2, 2))
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="certified_accuracy: radius"):
        certified_accuracy(model, np.zeros((2, 2, 2, 1)), np.zeros(2), -1.0, lipschitz=1.0)
    with pytest.raises(ValueError, match="certified_radius: lipschitz"):
        certified_radius(model, np.zeros((2, 2, 2, 1)), np.zeros(2), lipschitz=0.0)
    with pytest.raises(ValueError, match="local_lipschitz: iterations"):
        local_lipschitz(model, np.zeros((2, 2, 2, 1)), iterations=0)
