"""What the paper measures: accuracy, generalization gap, input-gradient norms, sharpness, spectra.

Every function that runs the model puts it in **evaluation mode** (BatchNorm uses its running
statistics, dropout is off, the spectral power iteration does not advance), so that the network
is a fixed function of each example on its own, and restores the previous mode afterwards.

Input-gradient norms (the paper's Fig. 2 "sensitivity")
-------------------------------------------------------
For examples x_1..x_n with losses ℓ_i = CE(f(x_i), y_i) and g_i = ∂ℓ_i/∂x_i (an image-shaped
array), two aggregations are reported, since the paper does not say which it used:

``mean_loss``
    ‖∇_X L̄‖₂ with L̄ = (1/n) Σ_i ℓ_i and X the whole (n, H, W, C) input array, i.e. the ℓ2
    (Frobenius) norm of the gradient of the dataset-mean loss: (1/n)·sqrt(Σ_i ‖g_i‖²). It shrinks
    like 1/sqrt(n) at a fixed per-example size, so compare it only between sets of equal n (the
    trainer uses the same number of training and test examples).
``per_example``
    (1/n) Σ_i ‖g_i‖₂, the mean over examples of each example's own input-gradient norm
    (independent of n).

Sharpness (the paper's Fig. 3)
------------------------------
The largest eigenvalue of the Hessian of L̄(θ) (the mean data loss over a fixed set of examples,
without any regularizer) with respect to *all* parameters θ, by power iteration on Hessian-vector
products. Each product is a central finite difference of two exact gradients,
H v ≈ (∇L̄(θ + h·v) − ∇L̄(θ − h·v)) / (2h) for a unit v, computed on a float64 copy of the model.
Power iteration converges to the eigenvalue of largest magnitude; when that one is negative a
second, shifted power iteration finds the largest algebraic one (:func:`top_eigenvalue`). The
tests cross-check the result against ``scipy.sparse.linalg.eigsh`` on a LinearOperator of the
same products, and against the exact Hessian of softmax regression.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from specnorm_np._validation import check_int
from specnorm_np.backend import get_array_module, to_numpy
from specnorm_np.nn.losses import SoftmaxCrossEntropy, check_labels
from specnorm_np.spectral.views import as_matrix, named_weights

__all__ = [
    "HVP_STEP",
    "accuracy",
    "evaluate",
    "generalization_gap",
    "gap_at_threshold",
    "choose_alpha",
    "input_gradient_norms",
    "make_hessian_vector_product",
    "hessian_operator",
    "hessian_top_eigenvalue",
    "top_eigenvalue",
    "weight_matrices",
    "largest_singular_values",
    "singular_values",
]

#: finite-difference step of the Hessian-vector products (in float64; see
#: make_hessian_vector_product for why it is this small)
HVP_STEP = 1e-6


class _EvalMode:
    """Context manager: evaluation mode inside, the previous mode restored afterwards."""

    def __init__(self, model: Any) -> None:
        self.model, self.was_training = model, bool(getattr(model, "training", False))

    def __enter__(self) -> Any:
        self.model.eval()
        return self.model

    def __exit__(self, *exc: Any) -> None:
        self.model.train(self.was_training)


def _batches(n: int, batch_size: int) -> list[slice]:
    batch_size = check_int(batch_size, "batch_size", "metrics", minimum=1)
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def accuracy(logits: Any, labels: Any) -> float:
    """Fraction of rows of ``logits`` (N, K) whose arg-max equals ``labels`` (N,)."""
    if logits.shape[0] == 0:
        return float("nan")
    predicted = to_numpy(logits.argmax(axis=-1))
    return float((predicted == to_numpy(labels)).mean())


def evaluate(model: Any, x: Any, y: Any, *, batch_size: int = 500) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on ``x`` (N, H, W, C), ``y`` (N,), in eval mode."""
    criterion = SoftmaxCrossEntropy()
    n = x.shape[0]
    total_loss, correct = 0.0, 0.0
    with _EvalMode(model):
        for part in _batches(n, batch_size):
            logits = model.forward(x[part])
            if part.start == 0:  # all labels at once, against the model's number of classes
                check_labels(y, (n, logits.shape[1]), "metrics.evaluate")
            total_loss += float(to_numpy(criterion.per_example(logits, y[part])).sum())
            correct += accuracy(logits, y[part]) * (part.stop - part.start)
    return total_loss / n, correct / n


def generalization_gap(train_accuracy: float, test_accuracy: float) -> float:
    """The paper's generalization gap: training accuracy minus test accuracy."""
    return float(train_accuracy) - float(test_accuracy)


def gap_at_threshold(train_accuracies: Any, test_accuracies: Any, alpha: float) -> float:
    """gap_α of Table 1: min over epochs t with test_acc(t) > α of train_acc(t) − test_acc(t).

    Returns NaN when no epoch's test accuracy exceeds ``alpha``.
    """
    train = np.asarray(train_accuracies, dtype=np.float64)
    test = np.asarray(test_accuracies, dtype=np.float64)
    if train.shape != test.shape:
        raise ValueError(
            f"gap_at_threshold: {train.shape[0]} training accuracies vs {test.shape[0]} test ones"
        )
    above = test > alpha
    return float((train - test)[above].min()) if above.any() else float("nan")


def choose_alpha(best_test_accuracies: Any, step: float = 0.01) -> float:
    """The paper's α: the largest multiple of ``step`` that every run's best test accuracy exceeds.

    E.g. best accuracies 0.898, 0.897, 0.884, 0.904 give α = 0.88, as in Table 1 (VGG, B=64).
    """
    values = np.asarray(best_test_accuracies, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    lowest = float(values.min())
    alpha = math.floor(round(lowest / step, 9)) * step
    if alpha >= lowest:  # strictly below: "exceeds α"
        alpha -= step
    return round(alpha, 10)


def input_gradient_norms(
    model: Any, x: Any, y: Any, *, batch_size: int = 500
) -> dict[str, float]:
    """Norms of ∂loss/∂input on the examples ``x`` (n, H, W, C), ``y`` (n,), in eval mode.

    Returns ``{"mean_loss": ‖∇_X (1/n)Σℓ_i‖₂, "per_example": (1/n)Σ‖∇_{x_i}ℓ_i‖₂}`` (see the
    module docstring). In eval mode each row of the batch's input gradient depends on its own
    example only, so one backward pass with the per-example (not batch-averaged) loss gradients
    gives every g_i at once. Parameter ``.grad`` arrays are overwritten as a side effect.
    """
    criterion = SoftmaxCrossEntropy()
    n = x.shape[0]
    if n == 0:
        raise ValueError("input_gradient_norms: no examples given")
    sum_squares, sum_norms = 0.0, 0.0
    with _EvalMode(model):
        for part in _batches(n, batch_size):
            logits = model.forward(x[part])
            _, dlogits = criterion(logits, y[part])
            dlogits = dlogits * (part.stop - part.start)  # undo the batch mean: ∂ℓ_i/∂z_i
            dx = model.backward(dlogits)
            xp = get_array_module(dx)
            squares = (dx.reshape(dx.shape[0], -1) ** 2).sum(axis=1)
            sum_squares += float(squares.sum())
            sum_norms += float(xp.sqrt(squares).sum())
    return {"mean_loss": math.sqrt(sum_squares) / n, "per_example": sum_norms / n}


def make_hessian_vector_product(
    model: Any, x: Any, y: Any, *, step: float = HVP_STEP, batch_size: int = 500,
    freeze_pattern: bool = True,
) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """Finite-difference Hessian-vector products of the mean data loss w.r.t. all parameters.

    Works on a float64 deep copy of ``model`` in eval mode (the model itself is not touched).

    Returns
    -------
    hvp : callable
        ``hvp(v)`` for a host float64 vector v of length P returns H·v (P,), as
        ‖v‖·(∇L̄(θ + h·v̂) − ∇L̄(θ − h·v̂)) / (2h) with v̂ = v/‖v‖ and h = ``step``; the
        error is O(h²) times third derivatives (zero where the ReLU pattern does not change).
        h is small (1e-6, in float64) so that the step rarely flips a ReLU: a flipped unit adds
        a gradient jump divided by 2h, i.e. false curvature (with h = 1e-4 a small MLP showed a
        top eigenvalue of 1248 instead of 52).
    size : int
        P, the number of parameters.

    With ``freeze_pattern`` (the default) every ReLU, LeakyReLU and MaxPool2d keeps, at θ ± h·v̂,
    the activation pattern (masks, max-pool choices) it had at θ. The Hessian of a ReLU network
    is that of the network with its pattern held fixed (the pattern is constant near almost
    every θ), and with it held fixed the loss is smooth in θ, so no step can cross a kink: a
    single flipped unit among the thousands a network has no longer adds a jump / 2h. (Without
    freezing, a 48-epoch CIFAR-10 run gave top eigenvalue estimates from −5512 to +20213.)
    """
    clone = copy.deepcopy(model).astype(np.float64).eval()
    params = clone.parameters()
    shapes = [p.data.shape for p in params]
    sizes = [int(np.prod(s)) for s in shapes]
    origin = [p.data.copy() for p in params]
    xp = get_array_module(origin[0]) if origin else np
    criterion = SoftmaxCrossEntropy()
    n = x.shape[0]
    parts = _batches(n, batch_size)
    x64 = [x[part].astype(np.float64) for part in parts]

    kinked = [m for m in clone.modules() if hasattr(m, "frozen_pattern")]
    patterns: list[list[Any]] = []
    if freeze_pattern:
        for xb in x64:  # the pattern of every kinked layer at θ, per batch part
            clone.forward(xb)
            patterns.append([m.pattern() for m in kinked])

    def gradient() -> np.ndarray:
        total = np.zeros(sum(sizes))
        for i, (part, xb) in enumerate(zip(parts, x64)):
            for layer, pattern in zip(kinked, patterns[i] if freeze_pattern else []):
                layer.frozen_pattern = pattern
            _, dlogits = criterion(clone.forward(xb), y[part])
            clone.backward(dlogits * ((part.stop - part.start) / n))  # ∂L̄/∂z over all n
            total += np.concatenate([to_numpy(p.grad).reshape(-1) for p in params])
        return total

    def set_offset(direction: np.ndarray, scale: float) -> None:
        start = 0
        for p, shape, size, base in zip(params, shapes, sizes, origin):
            piece = direction[start:start + size].reshape(shape)
            p.data = base + scale * (xp.asarray(piece) if xp is not np else piece)
            start += size

    def hvp(vector: np.ndarray) -> np.ndarray:
        vector = np.asarray(vector, dtype=np.float64).reshape(-1)
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            return np.zeros_like(vector)
        unit = vector / norm
        set_offset(unit, step)
        plus = gradient()
        set_offset(unit, -step)
        minus = gradient()
        set_offset(unit, 0.0)
        return (plus - minus) * (norm / (2 * step))

    return hvp, sum(sizes)


def hessian_operator(model: Any, x: Any, y: Any, **options: Any) -> Any:
    """The same Hessian-vector products as a ``scipy.sparse.linalg.LinearOperator`` (P x P)."""
    from scipy.sparse.linalg import LinearOperator

    hvp, size = make_hessian_vector_product(model, x, y, **options)
    return LinearOperator((size, size), matvec=hvp, rmatvec=hvp, dtype=np.float64)


def _power_iteration(
    apply: Callable[[np.ndarray], np.ndarray], vector: np.ndarray, iterations: int,
    tolerance: float,
) -> tuple[float, np.ndarray, int, bool]:
    """Power iteration on a symmetric operator: (Rayleigh quotient, vector, steps, converged)."""
    value, used = float("nan"), 0
    for used in range(1, iterations + 1):
        product = apply(vector)
        new_value = float(vector @ product)
        norm = float(np.linalg.norm(product))
        if norm == 0.0:
            return 0.0, vector, used, True
        vector = product / norm
        if math.isfinite(value) and abs(new_value - value) <= tolerance * abs(new_value):
            return new_value, vector, used, True
        value = new_value
    return value, vector, used, False


def top_eigenvalue(
    apply: Callable[[np.ndarray], np.ndarray],
    size: int,
    *,
    iterations: int = 20,
    tolerance: float = 1e-3,
    seed: int = 0,
) -> dict[str, Any]:
    """Largest (algebraic) eigenvalue of a symmetric operator given as ``apply(v) = A v``.

    Power iteration from a seeded random unit vector: w = A v, λ = vᵀw (Rayleigh quotient),
    v = w/‖w‖, until λ changes by less than ``tolerance``·abs(λ) or after ``iterations`` products.
    Power iteration finds the eigenvalue of largest *magnitude*; when that one is negative
    (λ_neg), a second power iteration on the shifted operator A − λ_neg·I (whose
    largest-magnitude eigenvalue is λ_max − λ_neg ≥ 0) gives λ_max.

    Returns ``{"eigenvalue", "iterations" (products used), "converged", "largest_magnitude"}``.
    """
    start = np.random.default_rng(seed).standard_normal(size)
    start /= np.linalg.norm(start)
    value, vector, used, converged = _power_iteration(apply, start, iterations, tolerance)
    result = {"eigenvalue": value, "iterations": used, "converged": converged,
              "largest_magnitude": value}
    if math.isfinite(value) and value < 0:
        shift = value
        shifted, _, more, converged = _power_iteration(
            lambda v: apply(v) - shift * v, start, iterations, tolerance)
        result.update(eigenvalue=shifted + shift, iterations=used + more, converged=converged)
    return result


def hessian_top_eigenvalue(
    model: Any,
    x: Any,
    y: Any,
    *,
    iterations: int = 20,
    tolerance: float = 1e-3,
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """Top Hessian eigenvalue of the mean data loss on (x, y) w.r.t. all parameters.

    :func:`top_eigenvalue` on the products of :func:`make_hessian_vector_product` (``options``
    go there: ``step``, ``batch_size``). Returns its dict.
    """
    hvp, size = make_hessian_vector_product(model, x, y, **options)
    return top_eigenvalue(hvp, size, iterations=iterations, tolerance=tolerance, seed=seed)


def weight_matrices(model: Any) -> dict[str, np.ndarray]:
    """The paper's matrix view of every regularized weight, as host arrays.

    A Linear weight (out, in) as is; a conv kernel (out, kh, kw, in) as ``reshape(out, -1)``,
    one row per output channel (Section 3.2 of the paper).
    """
    weights = named_weights(model, "weight_matrices")
    return {name: to_numpy(as_matrix(p.data)) for name, p in weights}


def largest_singular_values(model: Any) -> dict[str, float]:
    """σ(W) (exact, by SVD) of every regularized weight's matrix view, by parameter name."""
    return {
        name: float(np.linalg.svd(matrix.astype(np.float64), compute_uv=False)[0])
        for name, matrix in weight_matrices(model).items()
    }


def singular_values(model: Any) -> dict[str, list[float]]:
    """All singular values (descending) of every regularized weight's matrix view."""
    return {
        name: np.linalg.svd(matrix.astype(np.float64), compute_uv=False).tolist()
        for name, matrix in weight_matrices(model).items()
    }
