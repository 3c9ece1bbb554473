"""Matrix views, normalized power iteration and the paper's literal Algorithm 1 (float64)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from specnorm_np import nn
from specnorm_np.spectral import (
    as_matrix,
    from_matrix,
    literal_algorithm1,
    named_weights,
    power_iteration,
    random_unit_vector,
    top_singular_triplet,
)


def _with_singular_values(rng: np.random.Generator, m: int, n: int, values: np.ndarray):
    left, _ = np.linalg.qr(rng.standard_normal((m, len(values))))
    right, _ = np.linalg.qr(rng.standard_normal((n, len(values))))
    return (left * values) @ right.T


def _matrices(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "random square": rng.standard_normal((20, 20)),
        "tall": rng.standard_normal((60, 15)),
        "wide": rng.standard_normal((15, 60)),
        "ill-conditioned": _with_singular_values(rng, 30, 25, np.logspace(0, -12, 25)),
        "rank one": np.outer(rng.standard_normal(12), rng.standard_normal(7)),
        "conv kernel": rng.standard_normal((6, 3, 3, 4)),
    }


# ---- matrix views ----------------------------------------------------------------------------
def test_as_matrix_is_a_view_in_patch_order(rng):
    kernel = rng.standard_normal((5, 3, 2, 4))
    matrix = as_matrix(kernel)
    assert matrix.shape == (5, 3 * 2 * 4)
    assert np.shares_memory(matrix, kernel)
    # column (i, j, c) of row o is kernel[o, i, j, c]: the (kh, kw, in) order of an im2col row
    o, i, j, c = 3, 2, 1, 2
    assert matrix[o, (i * 2 + j) * 4 + c] == kernel[o, i, j, c]
    assert np.array_equal(from_matrix(matrix * 2.0, kernel.shape), kernel * 2.0)
    linear = rng.standard_normal((4, 7))
    assert np.array_equal(as_matrix(linear), linear)


def test_as_matrix_and_from_matrix_reject_bad_shapes():
    with pytest.raises(ValueError, match="as_matrix: expected a weight with at least 2 axes"):
        as_matrix(np.zeros(5))
    with pytest.raises(ValueError, match=r"from_matrix: .*\(4, 6\)"):
        from_matrix(np.zeros((4, 5)), (4, 3, 2))


def test_named_weights_names_and_selection():
    model = nn.Sequential(nn.Linear(3, 4, rng=0), nn.ReLU(), nn.Linear(4, 2, rng=1))
    assert [n for n, _ in named_weights(model)] == ["0.weight", "2.weight"]
    assert [n for n, _ in named_weights(model.named_parameters())] == ["0.weight", "2.weight"]
    # bare Parameters: position in the given list (biases count) and the parameter's name
    assert [n for n, _ in named_weights(model.parameters())] == ["0.weight", "2.weight"]
    assert [n for n, _ in named_weights(model.parameters()[1:])] == ["1.weight"]
    with pytest.raises(ValueError, match="item 1 is str"):
        named_weights([model.parameters()[0], "oops"])


# ---- normalized power iteration ----------------------------------------------------------------
@pytest.mark.parametrize("kind", list(_matrices(np.random.default_rng(0))))
def test_power_iteration_converges_to_the_svd(kind):
    weight = _matrices(np.random.default_rng(0))[kind]
    expected = np.linalg.svd(as_matrix(weight), compute_uv=False)[0]
    v0 = random_unit_vector(as_matrix(weight).shape[1], weight, seed=1)
    sigma, u, v = power_iteration(weight, v0, iterations=3000)
    assert abs(float(sigma) - expected) <= 1e-6 * expected
    # the vectors are unit vectors and a singular pair: W v = σ u
    assert np.isclose(np.linalg.norm(u), 1) and np.isclose(np.linalg.norm(v), 1)
    np.testing.assert_allclose(as_matrix(weight) @ v, float(sigma) * u, atol=1e-5 * expected)
    # σ·u·vᵀ is the exact top rank-1 component (sign-independent)
    s_exact, u_exact, v_exact = top_singular_triplet(weight)
    np.testing.assert_allclose(np.outer(u, v) * float(sigma),
                               np.outer(u_exact, v_exact) * float(s_exact), atol=1e-5 * expected)


def test_one_step_per_call_converges_and_never_overshoots(rng):
    weight = rng.standard_normal((40, 25))
    expected = np.linalg.svd(weight, compute_uv=False)[0]
    v = random_unit_vector(25, weight, seed=3)
    history = []
    for _ in range(2000):
        sigma, _, v = power_iteration(weight, v, iterations=1)
        history.append(float(sigma))
    history = np.array(history)
    assert abs(history[-1] - expected) <= 1e-6 * expected
    assert np.all(history <= expected * (1 + 1e-12))  # a Rayleigh quotient: a lower bound
    assert np.all(np.diff(history) >= -1e-12 * expected)  # and it never decreases
    assert history[0] < expected * (1 - 1e-3)  # a real start, not the answer


def test_iterations_zero_evaluates_without_moving_v(rng):
    weight = rng.standard_normal((5, 8))
    v = random_unit_vector(8, weight, seed=0)
    sigma, u, v_out = power_iteration(weight, v, iterations=0)
    assert v_out is v
    assert np.isclose(float(sigma), np.linalg.norm(weight @ v))
    np.testing.assert_allclose(u, weight @ v / np.linalg.norm(weight @ v))


def test_zero_matrix_gives_zero_sigma_without_nan(rng):
    v = random_unit_vector(6, np.zeros(1), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division-by-zero warning either
        sigma, u, v_out = power_iteration(np.zeros((4, 6)), v, iterations=3)
    assert float(sigma) == 0.0 and np.all(u == 0)
    np.testing.assert_array_equal(v_out, v)  # still a unit vector to start from later
    weight = rng.standard_normal((4, 6))
    sigma, _, _ = power_iteration(weight, v_out, iterations=500)
    assert np.isclose(float(sigma), np.linalg.svd(weight, compute_uv=False)[0])


def test_power_iteration_runs_on_the_device_backend(backend, rng):
    host = rng.standard_normal((9, 7))
    weight = backend.asarray(host)
    v = random_unit_vector(7, weight, seed=2)
    assert type(v) is type(weight)
    sigma, u, v = power_iteration(weight, v, iterations=400)
    assert type(u) is type(weight)
    assert np.isclose(float(sigma), np.linalg.svd(host, compute_uv=False)[0], rtol=1e-9)
    sigma_exact, _, _ = top_singular_triplet(weight)
    assert np.isclose(float(sigma_exact), float(sigma))


def test_random_unit_vector_is_seeded_per_key(rng):
    like = np.zeros(1, dtype=np.float32)
    a = random_unit_vector(10, like, seed=5, key="0.weight")
    assert a.dtype == np.float32 and np.isclose(np.linalg.norm(a), 1, atol=1e-6)
    np.testing.assert_array_equal(a, random_unit_vector(10, like, seed=5, key="0.weight"))
    assert not np.allclose(a, random_unit_vector(10, like, seed=5, key="2.weight"))
    assert not np.allclose(a, random_unit_vector(10, like, seed=6, key="0.weight"))


def test_power_iteration_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"power_iteration: v must have shape \(3,\)"):
        power_iteration(np.ones((2, 3)), np.ones(2))
    with pytest.raises(ValueError, match="iterations must be an int >= 0"):
        power_iteration(np.ones((2, 3)), np.ones(3), iterations=-1)


# ---- the paper's Algorithm 1, as printed ---------------------------------------------------------
def test_literal_algorithm1_estimates_one_over_sigma(rng):
    weight = _with_singular_values(rng, 8, 6, np.array([3.0, 1.5, 1.0, 0.5, 0.2, 0.1]))
    sigma_1, u_1, v_1 = top_singular_triplet(weight)
    # one step from the true top vector: ‖W v₁‖ / ‖WᵀW v₁‖ = σ₁ / σ₁² = 1/σ₁
    sigma, u, v = literal_algorithm1(weight, v_1, iterations=1)
    assert np.isclose(float(sigma), 1 / float(sigma_1), rtol=1e-12)
    # the unnormalized vectors have lengths σ₁ and σ₁², so λσuvᵀ = λσ₁²·u₁v₁ᵀ:
    # the gradient of (λ/3)σ₁³, not of (λ/2)σ₁² (whose gradient is λσ₁·u₁v₁ᵀ)
    lam = 0.01
    np.testing.assert_allclose(lam * float(sigma) * np.outer(u, v),
                               lam * float(sigma_1) ** 2 * np.outer(u_1, v_1), atol=1e-12)
    # from a random start the estimate still tends to 1/σ₁
    v0 = random_unit_vector(6, weight, seed=0)
    sigma, _, _ = literal_algorithm1(weight, v0, iterations=30)
    assert np.isclose(float(sigma), 1 / float(sigma_1), rtol=1e-6)


def test_literal_algorithm1_vectors_overflow_or_vanish(rng):
    values = np.array([1.0, 0.6, 0.3, 0.1])
    v0 = random_unit_vector(5, np.zeros(1), seed=0)
    with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
        big = _with_singular_values(rng, 6, 5, 3.0 * values)  # σ₁ = 3: grows like 9^t
        _, u, v = literal_algorithm1(big, v0, iterations=400)
        assert not np.all(np.isfinite(v))
        small = _with_singular_values(rng, 6, 5, 0.5 * values)  # σ₁ = 0.5: shrinks like 4^-t
        sigma, u, v = literal_algorithm1(small, v0, iterations=600)
        assert np.all(v == 0) and np.all(u == 0)
        assert np.isnan(float(sigma))
    # the normalized iteration on the same matrices stays finite and correct
    for weight, expected in ((big, 3.0), (small, 0.5)):
        sigma, u, v = power_iteration(weight, v0, iterations=600)
        assert np.isclose(float(sigma), expected) and np.isclose(np.linalg.norm(v), 1)


# ---- normalized: the host fast path against the reference route ---------------------------------
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64])
@pytest.mark.parametrize("fallback_kind", ["none", "same", "other dtype", "broadcast"])
@pytest.mark.parametrize("values", ["random", "zero", "nan", "inf"])
def test_normalized_fast_path_equals_the_reference_route(dtype, fallback_kind, values):
    from specnorm_np.spectral.power_iteration import _normalized_reference, normalized

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 6)) * 5).astype(dtype)
    if values == "zero":
        x[...] = 0
    elif values in ("nan", "inf") and np.issubdtype(dtype, np.floating):
        x[1, 2] = np.nan if values == "nan" else np.inf
    fallback = {"none": None,
                "same": rng.standard_normal((4, 6)).astype(dtype),
                "other dtype": rng.standard_normal((4, 6)),
                "broadcast": rng.standard_normal((6,)).astype(dtype)}[fallback_kind]
    with np.errstate(all="ignore"):  # inf / inf and float16 overflow: NaN on both routes
        unit, norm = normalized(x, fallback)
        unit_ref, norm_ref = _normalized_reference(x, fallback)
    assert unit.dtype == unit_ref.dtype and unit.shape == unit_ref.shape
    assert np.asarray(norm).dtype == np.asarray(norm_ref).dtype
    np.testing.assert_array_equal(unit, unit_ref)  # bitwise (NaN where NaN)
    np.testing.assert_array_equal(norm, norm_ref)


class _Marked(np.ndarray):
    """An ndarray subclass, to check that the fast path keeps the reference route's types."""


@pytest.mark.parametrize("case", ["0-d", "0-d with fallback", "subclass", "subclass fallback",
                                  "F-order with C fallback", "empty"])
def test_normalized_fast_path_keeps_types_and_layouts(case):
    from specnorm_np.spectral.power_iteration import _normalized_reference, normalized

    rng = np.random.default_rng(4)
    matrix = rng.standard_normal((3, 5)).astype(np.float32)
    x, fallback = {
        "0-d": (np.array(2.0, np.float32), None),
        "0-d with fallback": (np.array(2.0, np.float32), np.array(1.0, np.float32)),
        "subclass": (matrix.view(_Marked), None),
        "subclass fallback": (matrix.view(_Marked), np.zeros((3, 5), np.float32)),
        "F-order with C fallback": (np.asfortranarray(matrix), np.zeros((3, 5), np.float32)),
        "empty": (np.zeros((0, 4), np.float32), np.ones((0, 4), np.float32)),
    }[case]
    unit, norm = normalized(x, fallback)
    unit_ref, norm_ref = _normalized_reference(x, fallback)
    assert type(unit) is type(unit_ref) and type(norm) is type(norm_ref)
    assert np.shape(unit) == np.shape(unit_ref) and unit.dtype == unit_ref.dtype
    if isinstance(unit, np.ndarray) and unit.ndim:
        assert unit.flags.c_contiguous == unit_ref.flags.c_contiguous
        assert unit.flags.f_contiguous == unit_ref.flags.f_contiguous
    np.testing.assert_array_equal(unit, unit_ref)
    np.testing.assert_array_equal(norm, norm_ref)
