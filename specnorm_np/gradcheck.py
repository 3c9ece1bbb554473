"""Numerical gradient checking, as a tool for users.

Every hand-written backward pass can be wrong in ways that still train. These functions compare
the analytic gradients a layer or model computes with central differences, in float64::

    from specnorm_np import gradcheck, nn
    gradcheck.check_layer(nn.Conv2d(3, 4, 3, stride=2), x)         # raises if wrong
    gradcheck.check_model(model, x, y)                             # whole model + loss

How a layer is checked: draw a *random* upstream gradient g with the output's shape and form the
scalar L(x, θ) = ⟨layer(x; θ), g⟩. Its gradient with respect to x is exactly what
``layer.backward(g)`` must return (a vector–Jacobian product), and its gradient with respect to a
parameter θ is what ``backward`` must store in ``θ.grad``. A random g (rather than summing the
outputs) exercises every output and every path of the Jacobian.

The error of one entry is ``|a - n| / max(|a| + |n|, floor)`` (a relative error with a floor so
that entries that are both ~0 do not divide noise by noise); a check fails when the largest
error exceeds ``tol``, and also whenever an analytic or a numerical value is NaN or Inf (a NaN
compares false with everything, so it could otherwise never exceed ``tol``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from specnorm_np._validation import check_choice, check_int, check_number
from specnorm_np.backend import get_array_module, to_numpy

__all__ = [
    "GradcheckError",
    "CheckResult",
    "numerical_gradient",
    "check_function",
    "check_layer",
    "check_model",
    "relative_error",
]

DEFAULT_EPS = 1e-5
DEFAULT_TOL = 1e-5
DEFAULT_FLOOR = 1e-4


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with the numerical one."""


@dataclass
class CheckResult:
    """Outcome of checking one tensor (``"input"`` or a parameter name)."""

    owner: str
    tensor: str
    max_error: float
    worst_index: tuple[int, ...] | int
    analytic: float
    numerical: float
    mode: str
    checked: int

    def __str__(self) -> str:
        return (
            f"{self.owner} / {self.tensor}: max relative error {self.max_error:.2e} "
            f"({self.mode}, {self.checked} checked)"
        )


def relative_error(a: Any, n: Any, floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """Entry-wise ``|a - n| / max(|a| + |n|, floor)`` on host arrays."""
    a, n = np.asarray(a, dtype=np.float64), np.asarray(n, dtype=np.float64)
    return np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), floor)


def numerical_gradient(
    f: Callable[[], float], x: Any, eps: float = DEFAULT_EPS, indices: Any = None
) -> np.ndarray:
    """Central differences ``(f(x + eps·e_i) - f(x - eps·e_i)) / 2eps`` for flat ``indices``.

    ``f`` takes no argument and reads ``x``, which is perturbed in place and restored. Returns a
    host float64 array with one value per index (all entries of ``x`` when ``indices`` is None).
    """
    if not x.flags.c_contiguous:
        raise ValueError(
            "gradcheck: the checked array must be C-contiguous (it is perturbed through a flat "
            "view); pass numpy.ascontiguousarray(x)"
        )
    flat = x.reshape(-1)  # a view: writing to it writes to x
    if indices is None:
        indices = range(flat.shape[0])
    out = np.empty(len(indices), dtype=np.float64)
    for k, i in enumerate(indices):
        old = float(flat[i])
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        out[k] = (plus - minus) / (2 * eps)
    return out


def _directional(
    f: Callable[[], float], x: Any, analytic: Any, directions: int, eps: float, rng: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Compare ⟨∇f, d⟩ with (f(x + eps·d) - f(x - eps·d)) / 2eps on random unit directions d."""
    xp = get_array_module(x)
    base = x.copy()
    num, ana = np.empty(directions), np.empty(directions)
    for k in range(directions):
        d = rng.standard_normal(x.shape)
        d /= np.linalg.norm(d)
        d_dev = xp.asarray(d.astype(x.dtype)) if xp is not np else d.astype(x.dtype)
        x[...] = base + eps * d_dev
        plus = f()
        x[...] = base - eps * d_dev
        minus = f()
        x[...] = base
        num[k] = (plus - minus) / (2 * eps)
        ana[k] = float((to_numpy(analytic).astype(np.float64) * d).sum())
    return ana, num


def check_function(
    f: Callable[[], float],
    x: Any,
    analytic: Any,
    *,
    owner: str = "function",
    tensor: str = "x",
    eps: float = DEFAULT_EPS,
    tol: float = DEFAULT_TOL,
    floor: float = DEFAULT_FLOOR,
    mode: str = "auto",
    max_elements: int = 4000,
    directions: int = 12,
    seed: int = 0,
) -> CheckResult:
    """Check that ``analytic`` is the gradient of the scalar ``f()`` with respect to ``x``.

    Parameters
    ----------
    f : callable
        No arguments; returns a Python float computed from the current value of ``x``.
    x : ndarray
        float64 array that ``f`` reads; perturbed in place and restored.
    analytic : ndarray
        The claimed gradient, same shape as ``x``.
    mode : {"auto", "elements", "directional"}
        ``"elements"`` checks every entry (or ``max_elements`` random ones);
        ``"directional"`` checks ``directions`` random projections (cheap for big tensors);
        ``"auto"`` picks elements up to ``max_elements`` entries, else both a random sample of
        entries and the random projections.

    Raises
    ------
    GradcheckError
        Naming ``owner``, ``tensor``, the worst index and both values.
    """
    check_choice(mode, "mode", "gradcheck", ("auto", "elements", "directional"))
    _check_options(eps=eps, tol=tol, floor=floor, max_elements=max_elements,
                   directions=directions)
    if x.dtype != np.float64:
        raise ValueError(f"gradcheck: {owner} / {tensor} must be float64, got {x.dtype}")
    if tuple(analytic.shape) != tuple(x.shape):
        raise GradcheckError(
            f"{owner} / {tensor}: analytic gradient has shape {tuple(analytic.shape)}, "
            f"expected {tuple(x.shape)}"
        )
    rng = np.random.default_rng(seed)
    a_host = to_numpy(analytic).astype(np.float64).reshape(-1)
    _require_finite(a_host, x.shape, owner, tensor, "analytic gradient",
                    "the backward pass produced them")
    results = []
    if mode in ("auto", "elements"):
        size = int(np.prod(x.shape))
        idx = None if size <= max_elements else rng.choice(size, max_elements, replace=False)
        num = numerical_gradient(f, x, eps, indices=idx)
        _require_finite(num, x.shape, owner, tensor, "numerical gradient",
                        "the function is NaN or Inf within eps of x", idx)
        ana = a_host if idx is None else a_host[idx]
        err = relative_error(ana, num, floor)
        k = int(np.argmax(err)) if err.size else 0
        where = k if idx is None else int(idx[k])
        worst = tuple(int(i) for i in np.unravel_index(where, x.shape)) if err.size else 0
        results.append(("elements", err, worst, ana, num, k))
        if mode == "auto" and idx is None:
            mode = "done"
    if mode in ("auto", "directional"):
        ana, num = _directional(f, x, analytic, directions, eps, rng)
        if not np.isfinite(num).all():
            raise GradcheckError(
                f"gradient check failed for {owner} / {tensor}: the numerical directional "
                f"derivative is NaN or Inf in {int((~np.isfinite(num)).sum())} of {directions} "
                "directions (the function is NaN or Inf within eps of x)"
            )
        err = relative_error(ana, num, floor)
        k = int(np.argmax(err))
        results.append(("directional", err, k, ana, num, k))
    name, err, worst, ana, num, k = max(results, key=lambda r: float(r[1].max(initial=0.0)))
    result = CheckResult(
        owner=owner,
        tensor=tensor,
        max_error=float(err.max(initial=0.0)),
        worst_index=worst,
        analytic=float(ana[k]) if ana.size else 0.0,
        numerical=float(num[k]) if num.size else 0.0,
        mode="+".join(r[0] for r in results),
        checked=int(sum(r[1].size for r in results)),
    )
    if not result.max_error <= tol:
        what = "direction" if name == "directional" else "index"
        raise GradcheckError(
            f"gradient check failed for {owner} / {tensor}: relative error "
            f"{result.max_error:.3e} > tol {tol:.1e} at {what} {worst}: analytic "
            f"{result.analytic:.10g} vs numerical {result.numerical:.10g} ({name} mode)"
        )
    return result


def _check_options(*, eps: Any, tol: Any, floor: Any, max_elements: Any,
                   directions: Any) -> None:
    """Refuse settings under which a check would be meaningless (NaN tol) or crash (eps 0)."""
    check_number(eps, "eps", "gradcheck", minimum=0, open_low=True)
    check_number(tol, "tol", "gradcheck", minimum=0, open_low=True)
    check_number(floor, "floor", "gradcheck", minimum=0, open_low=True)
    check_int(max_elements, "max_elements", "gradcheck", minimum=1)
    check_int(directions, "directions", "gradcheck", minimum=1)


def _require_finite(values: np.ndarray, shape: tuple[int, ...], owner: str, tensor: str,
                    what: str, cause: str, indices: Any = None) -> None:
    """A NaN or Inf gradient value fails the check, naming the first bad entry."""
    bad = ~np.isfinite(values)
    if bad.any():
        k = int(np.argmax(bad))
        flat = k if indices is None else int(indices[k])
        where = tuple(int(i) for i in np.unravel_index(flat, shape))
        raise GradcheckError(
            f"gradient check failed for {owner} / {tensor}: the {what} has {int(bad.sum())} "
            f"NaN or Inf value(s) ({cause}), the first {values[k]} at index {where}"
        )


def _random_states(module: Any) -> list[tuple[Any, Any]]:
    """(layer, state) of every stochastic layer (one with ``random_state()`` and
    ``set_random_state()``, such as Dropout), to replay the same random draws."""
    found = []
    for m in module.modules() if hasattr(module, "modules") else []:
        if callable(getattr(m, "random_state", None)) \
                and callable(getattr(m, "set_random_state", None)):
            found.append((m, m.random_state()))
    return found


@contextmanager
def _buffers_preserved(module: Any) -> Iterator[None]:
    """Put buffers (BatchNorm running statistics) back as they were after the check: each of
    the many forward passes of a training-mode check would otherwise update them."""
    saved = []
    for m in module.modules() if hasattr(module, "modules") else []:
        for name in getattr(m, "_buffer_names", []):
            value = getattr(m, name)
            saved.append((m, name, value.copy() if hasattr(value, "copy") else value))
    try:
        yield
    finally:
        for m, name, value in saved:
            setattr(m, name, value)


def _collect_grads(module: Any, label: str) -> dict[str, Any]:
    """Copies of every parameter's .grad after backward; a missing one is a clear failure."""
    grads = {}
    for name, p in module.named_parameters():
        if p.grad is None:
            raise GradcheckError(f"{label} / {name}: backward did not set .grad")
        grads[name] = p.grad.copy()
    return grads


def check_layer(
    layer: Any,
    x: Any,
    *,
    check_input: bool = True,
    check_params: bool = True,
    seed: int = 0,
    **options: Any,
) -> list[CheckResult]:
    """Check a layer's input gradient and every parameter gradient, in float64.

    ``layer`` and ``x`` must already be float64 (``layer.astype(numpy.float64)``). Stochastic
    layers (dropout) replay the same random draws in every evaluation, and buffers (BatchNorm
    running statistics) are restored afterwards. Extra keyword arguments
    go to :func:`check_function` (``tol``, ``eps``, ``floor``, ``mode``, ...).

    Returns one :class:`CheckResult` per tensor; raises :class:`GradcheckError` on a mismatch.
    """
    label = getattr(layer, "label", type(layer).__name__)
    xp = get_array_module(x)
    states = _random_states(layer)

    def restore() -> None:
        for layer_with_rng, state in states:
            layer_with_rng.set_random_state(state)

    with _buffers_preserved(layer):
        restore()
        y = layer.forward(x)
        g_host = np.random.default_rng(seed).standard_normal(y.shape)
        g = g_host if xp is np else xp.asarray(g_host)

        def loss() -> float:
            restore()
            return float((layer.forward(x) * g).sum())

        dx = layer.backward(g)
        grads = _collect_grads(layer, label)
        results = []
        if check_input:
            results.append(check_function(loss, x, dx, owner=label, tensor="input", seed=seed,
                                          **options))
        if check_params:
            for name, p in layer.named_parameters():
                results.append(check_function(loss, p.data, grads[name], owner=label,
                                              tensor=name, seed=seed, **options))
    return results


def check_model(
    model: Any,
    x: Any,
    y: Any,
    *,
    loss: Any = None,
    check_input: bool = True,
    seed: int = 0,
    **options: Any,
) -> list[CheckResult]:
    """Check a whole model under a loss (default: softmax cross-entropy), in float64.

    The scalar is ``loss(model(x), y)``; its analytic gradients come from the loss's gradient
    with respect to the logits pushed through ``model.backward``.
    """
    if loss is None:
        from specnorm_np.nn.losses import SoftmaxCrossEntropy

        loss = SoftmaxCrossEntropy()
    label = getattr(model, "label", type(model).__name__)
    states = _random_states(model)

    def restore() -> None:
        for layer_with_rng, state in states:
            layer_with_rng.set_random_state(state)

    def value() -> float:
        restore()
        return float(loss(model.forward(x), y)[0])

    with _buffers_preserved(model):
        restore()
        _, dlogits = loss(model.forward(x), y)
        dx = model.backward(dlogits)
        grads = _collect_grads(model, label)
        results = []
        if check_input:
            results.append(check_function(value, x, dx, owner=label, tensor="input", seed=seed,
                                          **options))
        for name, p in model.named_parameters():
            results.append(check_function(value, p.data, grads[name], owner=label, tensor=name,
                                          seed=seed, **options))
    return results
