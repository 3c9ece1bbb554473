"""Matrix views of weights, and how regularizers find the weights they act on.

The paper (Section 2.5, see ``PAPER.md``) treats every layer's parameters as one matrix: a
Linear weight (out, in) as it is, and a conv kernel with ``b`` output channels as the
``b × (kh·kw·a)`` matrix with one row per output channel. With channels-last kernels
(out, kh, kw, in) this is a plain ``reshape(out, -1)``, a view without a copy, and the columns are
ordered like the entries of an input patch (kh, kw, in), so ``patches @ W_mat.T`` is the
convolution. A gradient computed for the matrix goes back with :func:`from_matrix`.

:func:`named_weights` is the one rule by which :class:`~specnorm_np.regularizers.WeightDecay`
and :class:`~specnorm_np.spectral.SpectralNormRegularizer` turn their ``params`` argument into
stable names (the keys of their checkpoint state).
"""

from __future__ import annotations

import math
from typing import Any

from specnorm_np.nn.module import Module, Parameter

__all__ = ["as_matrix", "from_matrix", "named_weights"]


def as_matrix(weight: Any) -> Any:
    """The paper's matrix view of a weight.

    Parameters
    ----------
    weight : ndarray, shape (out, in) or (out, kh, kw, in) (any ndim >= 2)
        A Linear weight or a channels-last conv kernel.

    Returns
    -------
    ndarray, shape (out, prod(other axes))
        ``weight.reshape(out, -1)``; a view (no copy) when ``weight`` is contiguous, so writing
        to it writes to the weight.
    """
    if getattr(weight, "ndim", 0) < 2:
        raise ValueError(
            "as_matrix: expected a weight with at least 2 axes, (out, in) or (out, kh, kw, in), "
            f"got shape {tuple(getattr(weight, 'shape', ()))}"
        )
    return weight.reshape(weight.shape[0], -1)


def from_matrix(matrix: Any, weight_shape: tuple[int, ...]) -> Any:
    """Inverse of :func:`as_matrix`: reshape an (out, rest) matrix back to ``weight_shape``.

    Parameters
    ----------
    matrix : ndarray, shape (out, prod(weight_shape[1:]))
    weight_shape : tuple of int
        The original weight's shape, e.g. (out, kh, kw, in).
    """
    weight_shape = tuple(int(s) for s in weight_shape)
    expected = (weight_shape[0], math.prod(weight_shape[1:]))
    if tuple(matrix.shape) != expected:
        raise ValueError(
            f"from_matrix: a matrix for a weight of shape {weight_shape} must have shape "
            f"{expected}, got {tuple(matrix.shape)}"
        )
    return matrix.reshape(weight_shape)


def named_weights(params: Any, owner: str = "regularizer") -> list[tuple[str, Parameter]]:
    """The weights (``Parameter.regularize`` is True) in ``params``, with stable names.

    Parameters
    ----------
    params : Module, iterable of (name, Parameter) pairs, or iterable of Parameter
        * a :class:`~specnorm_np.nn.Module`: names are its qualified parameter names
          (``"0.weight"``, ``"features.3.weight"``), as in ``model.state_dict()``; this is the
          recommended form;
        * ``(name, Parameter)`` pairs, e.g. ``model.named_parameters()``: the given names;
        * bare Parameters, e.g. ``model.parameters()``: ``"<position>.<Parameter.name>"`` where
          position counts every item of ``params`` (weights or not), so the same list gives the
          same names in every call and in every run.
    owner : str
        Used in error messages.

    Returns
    -------
    list of (str, Parameter)
        Only parameters with ``regularize=True``; biases and BatchNorm scale/shift are left out.
    """
    if isinstance(params, Module):
        items = list(params.named_parameters())
    elif isinstance(params, Parameter):
        items = [(f"0.{params.name}", params)]
    else:
        items = []
        for position, item in enumerate(params):
            if isinstance(item, Parameter):
                items.append((f"{position}.{item.name}", item))
            elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Parameter):
                items.append((str(item[0]), item[1]))
            else:
                raise ValueError(
                    f"{owner}: params must be a Module, Parameters, or (name, Parameter) pairs; "
                    f"item {position} is {type(item).__name__}"
                )
    weights = [(name, p) for name, p in items if p.regularize]
    names = [name for name, _ in weights]
    if len(set(names)) != len(names):
        raise ValueError(f"{owner}: duplicate parameter names in params: {names}")
    return weights
