"""Input validation shared by the layers: every error names the layer and what it expected."""

from __future__ import annotations

from typing import Any

import numpy as np

from specnorm_np.backend import get_array_module

__all__ = ["NonFiniteError", "check_input", "check_finite", "check_grad"]


class NonFiniteError(ValueError):
    """An array that must be finite holds NaN or Inf (raised by the layers' input checks).

    A subclass of ``ValueError``, so code that catches bad input keeps working; the trainer
    catches this type to tell a diverged run from any other error.
    """


def check_input(
    layer: Any,
    x: Any,
    *,
    ndim: int | tuple[int, ...],
    layout: str,
    last_dim: int | None = None,
    last_name: str = "channels",
    dtype: Any = None,
) -> None:
    """Raise ``ValueError`` naming ``layer`` if ``x`` is not a finite float array as expected.

    ``layout`` describes the expected axes (e.g. ``"(N, H, W, C)"``) for the message. The
    NaN/Inf test costs one reduction: ``sum(x)`` is finite for finite ``x`` unless it overflows,
    and only then is the elementwise test run.
    """
    label = getattr(layer, "label", str(layer))
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(f"{label}: expected an array {layout}, got {type(x).__name__}")
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if x.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{label}: expected {want} input {layout}, got shape {tuple(x.shape)}")
    if x.dtype.kind != "f":
        raise ValueError(
            f"{label}: expected floating-point input (float32 or float64), got dtype {x.dtype}; "
            "convert with x.astype(numpy.float32)"
        )
    if last_dim is not None and x.shape[-1] != last_dim:
        raise ValueError(
            f"{label}: expected {last_dim} {last_name} in the last axis of {layout}, "
            f"got shape {tuple(x.shape)}"
        )
    check_finite(label, x)
    if dtype is not None and x.dtype != dtype:
        raise ValueError(
            f"{label}: input dtype {x.dtype} does not match the layer's parameters ({dtype}); "
            f"cast the input (x.astype({dtype})) or the model (model.astype(...)) so that "
            "they agree (mixing would silently promote activations, gradients and statistics)"
        )


def check_finite(label: str, x: Any, what: str = "input") -> None:
    xp = get_array_module(x)
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf or an overflowing sum
        total = x.sum() if x.size else 0.0
    if x.size and not bool(xp.isfinite(total)) and not bool(xp.isfinite(x).all()):
        bad = int((~xp.isfinite(x)).sum())
        raise NonFiniteError(f"{label}: {what} contains {bad} NaN or Inf value(s)")


def check_grad(layer: Any, dy: Any, expected_shape: tuple[int, ...], dtype: Any) -> None:
    """The upstream gradient must be an array of the shape and dtype of the last output.

    ``dtype`` is that of the layer's forward input (which, for layers with parameters, forward
    has already matched to the parameters). A mismatch is refused as forward refuses one: a
    float64 ``dy`` on a float32 layer would silently promote every gradient to float64.
    """
    label = getattr(layer, "label", layer)
    if not hasattr(dy, "shape") or not hasattr(dy, "dtype"):
        raise ValueError(
            f"{label}: backward expected an upstream gradient array of shape "
            f"{tuple(expected_shape)}, got {type(dy).__name__}"
        )
    if tuple(dy.shape) != tuple(expected_shape):
        raise ValueError(
            f"{label}: backward expected an upstream gradient of shape "
            f"{tuple(expected_shape)} (the shape forward returned), got {tuple(dy.shape)}"
        )
    if dy.dtype != dtype:
        raise ValueError(
            f"{label}: upstream gradient dtype {dy.dtype} does not match the dtype of the "
            f"forward pass ({dtype}); cast it (dy.astype({dtype})) so that they agree "
            "(mixing would silently promote the gradients)"
        )
