"""Metrics on cases with known answers: input gradients of softmax regression, the Hessian of a
quadratic and of softmax regression, gap_α, α, spectra; and power iteration against eigsh."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.linalg import eigsh

from specnorm_np import metrics, nn


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def linear_model(d: int, k: int, seed: int = 0, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(d, k, bias=bias, rng=seed)).astype(np.float64)


@pytest.fixture
def regression_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.standard_normal((37, 2, 3, 1)), rng.integers(0, 4, 37)


def test_accuracy_and_gap() -> None:
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0], [0.1, 0.2]])
    assert metrics.accuracy(logits, np.array([0, 1, 1, 0])) == 0.5
    assert metrics.generalization_gap(0.9, 0.75) == pytest.approx(0.15)


def test_evaluate_matches_direct_computation(regression_data) -> None:
    x, y = regression_data
    model = linear_model(6, 4)
    model.train()
    loss, acc = metrics.evaluate(model, x, y, batch_size=10)
    z = x.reshape(37, -1) @ model[1].weight.data.T
    assert loss == pytest.approx(-np.log(softmax(z)[np.arange(37), y]).mean(), rel=1e-12)
    assert acc == pytest.approx((z.argmax(1) == y).mean())
    assert model.training  # mode restored


def test_gap_at_threshold_is_min_gap_over_epochs_above_alpha() -> None:
    train = [0.70, 0.90, 0.95, 0.99]
    test = [0.60, 0.80, 0.86, 0.85]
    # epochs with test > 0.8: the 3rd (gap 0.09) and 4th (gap 0.14)
    assert metrics.gap_at_threshold(train, test, 0.80) == pytest.approx(0.09)
    assert metrics.gap_at_threshold(train, test, 0.5) == pytest.approx(0.09)
    assert np.isnan(metrics.gap_at_threshold(train, test, 0.9))


def test_choose_alpha_reproduces_the_papers_choice() -> None:
    # VGG B=64 in Table 1: best accuracies 0.898 0.897 0.884 0.904 -> alpha 0.88
    assert metrics.choose_alpha([0.898, 0.897, 0.884, 0.904]) == pytest.approx(0.88)
    assert metrics.choose_alpha([0.86, 0.9]) == pytest.approx(0.85)  # strictly below 0.86


def test_input_gradient_norms_of_softmax_regression(regression_data) -> None:
    x, y = regression_data
    model = linear_model(6, 4, bias=True)
    w = model[1].weight.data
    z = x.reshape(37, -1) @ w.T + model[1].bias.data
    onehot = np.eye(4)[y]
    g = (softmax(z) - onehot) @ w  # ∂ℓ_i/∂x_i for each example, (37, 6)
    norms = metrics.input_gradient_norms(model, x, y, batch_size=8)
    assert norms["per_example"] == pytest.approx(np.linalg.norm(g, axis=1).mean(), rel=1e-10)
    # gradient of the dataset-mean loss w.r.t. the whole input array: rows g_i / n
    assert norms["mean_loss"] == pytest.approx(np.linalg.norm(g / 37), rel=1e-10)


def test_top_eigenvalue_on_a_quadratic_with_known_spectrum() -> None:
    # loss ½θᵀAθ has Hessian A; eigenvalues chosen with a dominant *negative* one
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    eigenvalues = np.concatenate([[-9.0, 5.0, 2.0], np.linspace(-1, 1, 27)])
    a = q @ np.diag(eigenvalues) @ q.T
    result = metrics.top_eigenvalue(lambda v: a @ v, 30, iterations=500, tolerance=1e-10)
    assert result["largest_magnitude"] == pytest.approx(-9.0, rel=1e-6)
    assert result["eigenvalue"] == pytest.approx(5.0, rel=1e-6)
    assert result["converged"]


def exact_softmax_regression_hessian(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """H[(k,j),(l,m)] = (1/n) Σ_i (p_ik δ_kl − p_ik p_il) x_ij x_im for W (K, d) row-major."""
    flat = x.reshape(x.shape[0], -1)
    p = softmax(flat @ w.T)
    n, k = p.shape
    h = np.zeros((k * flat.shape[1],) * 2)
    for i in range(n):
        h += np.kron(np.diag(p[i]) - np.outer(p[i], p[i]), np.outer(flat[i], flat[i]))
    return h / n


def test_hessian_eigenvalue_of_softmax_regression_is_exact(regression_data) -> None:
    x, y = regression_data
    model = linear_model(6, 4, seed=1)
    exact = np.linalg.eigvalsh(exact_softmax_regression_hessian(x, y, model[1].weight.data))[-1]
    found = metrics.hessian_top_eigenvalue(model, x, y, iterations=300, tolerance=1e-9,
                                           batch_size=16)
    assert found["eigenvalue"] == pytest.approx(exact, rel=1e-5)
    operator = metrics.hessian_operator(model, x, y, batch_size=16)
    lanczos = eigsh(operator, k=1, which="LA", tol=1e-8)[0][0]
    assert lanczos == pytest.approx(exact, rel=1e-5)


def test_hessian_power_iteration_agrees_with_eigsh_on_a_relu_network() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((40, 3, 3, 2)), rng.integers(0, 3, 40)
    model = nn.Sequential(nn.Flatten(), nn.Linear(18, 12, rng=0), nn.ReLU(),
                          nn.Linear(12, 3, rng=1)).astype(np.float64)
    weights_before = model[1].weight.data.copy()
    operator = metrics.hessian_operator(model, x, y, step=1e-5)
    reference = eigsh(operator, k=1, which="LA", tol=1e-8)[0][0]
    found = metrics.hessian_top_eigenvalue(model, x, y, iterations=400, tolerance=1e-9,
                                           step=1e-5)
    assert found["converged"]
    assert found["eigenvalue"] == pytest.approx(reference, rel=1e-4)
    # the Hessian-vector products are symmetric: ⟨a, Hb⟩ = ⟨Ha, b⟩
    a, b = rng.standard_normal((2, operator.shape[0]))
    assert a @ operator.matvec(b) == pytest.approx(operator.matvec(a) @ b, rel=1e-5)
    np.testing.assert_array_equal(model[1].weight.data, weights_before)  # model untouched


def test_singular_values_use_the_papers_matrix_view() -> None:
    conv = nn.Conv2d(3, 5, (2, 3), rng=0)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(5 * 2 * 1, 4, rng=1))
    spectra = metrics.singular_values(model)
    kernel = conv.weight.data.reshape(5, -1)  # (out, kh·kw·in)
    np.testing.assert_allclose(spectra["0.weight"], np.linalg.svd(kernel, compute_uv=False),
                               rtol=1e-6)
    assert set(spectra) == {"0.weight", "2.weight"}  # no biases
    sigma = metrics.largest_singular_values(model)
    assert sigma["2.weight"] == pytest.approx(np.linalg.norm(model[2].weight.data, 2), rel=1e-6)


def test_frozen_pattern_hessian_products_do_not_depend_on_the_step() -> None:
    """With the activation pattern frozen at θ the loss is smooth in θ: central differences with
    steps 100x apart agree, and the products are symmetric, even on a conv net with ReLUs and
    overlapping max-pools where unfrozen steps of that size cross kinks."""
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((24, 6, 6, 2)), rng.integers(0, 3, 24)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, rng=0), nn.ReLU(), nn.MaxPool2d(3, 1),
        nn.Conv2d(4, 4, 3, rng=1), nn.LeakyReLU(0.1), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(4, 3, rng=2)).astype(np.float64)
    a, b = rng.standard_normal((2, sum(p.data.size for p in model.parameters())))
    products = {}
    for freeze in (True, False):
        for step in (1e-2, 1e-4):
            hvp, _ = metrics.make_hessian_vector_product(model, x, y, step=step, batch_size=10,
                                                         freeze_pattern=freeze)
            products[freeze, step] = hvp(a), hvp(b)
    frozen_big, frozen_small = products[True, 1e-2], products[True, 1e-4]
    np.testing.assert_allclose(frozen_big[0], frozen_small[0], rtol=1e-5,
                               atol=1e-5 * np.abs(frozen_small[0]).max())
    assert b @ frozen_small[0] == pytest.approx(a @ frozen_small[1], rel=1e-6)
    # without freezing, the large step crosses kinks: its products are visibly off
    error = np.abs(products[False, 1e-2][0] - frozen_small[0]).max()
    assert error > 1e-2 * np.abs(frozen_small[0]).max()


@pytest.mark.parametrize("bad", [-1, 4])
def test_evaluate_refuses_labels_out_of_range(regression_data, bad) -> None:
    """A label -1 (or K) anywhere, even in a later batch, is an error, not class K-1."""
    x, y = regression_data
    y = y.copy()
    y[-1] = bad  # in the last batch of 10
    with pytest.raises(ValueError, match=r"^metrics.evaluate: labels must lie in \[0, 4\)"):
        metrics.evaluate(linear_model(6, 4), x, y, batch_size=10)
