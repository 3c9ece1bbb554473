"""Element-wise activations."""

from __future__ import annotations

import math
from typing import Any

from specnorm_np.backend import get_array_module
from specnorm_np.nn._checks import check_grad, check_input
from specnorm_np.nn.module import Module

__all__ = ["ReLU", "LeakyReLU"]


class ReLU(Module):
    """``y = max(x, 0)``, any shape.

    Backward: dy/dx is the 0/1 mask D = [x > 0] (the paper's diagonal matrix D), so
    ``dx = dy * D``. The mask is applied as a multiply by a boolean array, one pass over memory.
    """

    def forward(self, x: Any) -> Any:
        check_input(self, x, ndim=(1, 2, 3, 4, 5), layout="(any shape)")
        mask = x > 0
        self._cache = mask
        return x * mask

    def backward(self, dy: Any) -> Any:
        mask = self._require_cache()
        check_grad(self, dy, mask.shape)
        return dy * mask


class LeakyReLU(Module):
    """``y = x`` where ``x > 0``, else ``negative_slope · x``; any shape.

    Parameters
    ----------
    negative_slope : float
        Slope for negative inputs (PyTorch's default 0.01).

    Backward: the Jacobian is diagonal with entries f_i = 1 if x_i > 0 else negative_slope, so
    ``dx = dy * f``. Forward builds f once (in the input's dtype) and keeps it for backward.
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)) \
                or not math.isfinite(negative_slope):
            raise ValueError(
                f"LeakyReLU: negative_slope must be a finite number, got {negative_slope!r}"
            )
        self.negative_slope = float(negative_slope)

    def forward(self, x: Any) -> Any:
        check_input(self, x, ndim=(1, 2, 3, 4, 5), layout="(any shape)")
        xp = get_array_module(x)
        one, slope = x.dtype.type(1), x.dtype.type(self.negative_slope)  # keep x's dtype
        factor = xp.where(x > 0, one, slope)
        self._cache = factor
        return x * factor

    def backward(self, dy: Any) -> Any:
        factor = self._require_cache()
        check_grad(self, dy, factor.shape)
        return dy * factor

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"
