"""Reshaping layers."""

from __future__ import annotations

import math
from typing import Any

from specnorm_np.nn._checks import check_grad, check_input
from specnorm_np.nn.module import Module

__all__ = ["Flatten"]


class Flatten(Module):
    """Keep the batch axis, merge the rest: (N, d1, d2, ...) -> (N, d1·d2·...).

    Channels-last feature maps (N, H, W, C) flatten in (H, W, C) order, so a Linear layer after
    Flatten sees each spatial position's channels next to each other (this differs from
    PyTorch's NCHW flattening order; copying weights between the two needs a permutation).

    Backward is the inverse reshape: dx = dy.reshape(input shape). Both are views (no copy)
    for contiguous arrays.
    """

    def forward(self, x: Any) -> Any:
        """x (N, ...) with at least 2 axes -> y (N, prod(...))."""
        check_input(self, x, ndim=tuple(range(2, 9)), layout="(N, ...)")
        shape = tuple(x.shape)
        self._cache = (shape, x.dtype)
        return x.reshape(shape[0], math.prod(shape[1:]))

    def backward(self, dy: Any) -> Any:
        """dy (N, prod(...)) -> dx (N, ...): a reshape keeps every entry in its order, so its
        Jacobian is the identity and dx is dy reshaped back."""
        shape, dtype = self._require_cache()
        check_grad(self, dy, (shape[0], math.prod(shape[1:])), dtype)
        return dy.reshape(shape)
