"""Element-wise activations."""

from __future__ import annotations

from typing import Any

from specnorm_np._validation import check_number
from specnorm_np.backend import get_array_module
from specnorm_np.nn._checks import check_grad, check_input
from specnorm_np.nn.module import Module

__all__ = ["ReLU", "LeakyReLU"]


class ReLU(Module):
    """``y = max(x, 0)``, any shape.

    Backward: dy/dx is the 0/1 mask D = [x > 0] (the paper's diagonal matrix D), so
    ``dx = dy * D``. The mask is applied as a multiply by a boolean array, one pass over memory.
    """

    #: when set (an array of x's shape), forward uses this mask instead of ``x > 0``: the
    #: layer is then linear, which exact second derivatives need
    #: (``metrics.make_hessian_vector_product`` freezes every ReLU at the pattern of the point
    #: where the Hessian is taken)
    frozen_pattern: Any = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, ndim=(1, 2, 3, 4, 5), layout="(any shape)")
        mask = x > 0 if self.frozen_pattern is None else _frozen(self, x, self.frozen_pattern)
        self._cache = (mask, x.dtype)
        return x * mask

    def pattern(self) -> Any:
        """The 0/1 mask of the last forward (what ``frozen_pattern`` takes)."""
        return self._require_cache()[0]

    def backward(self, dy: Any) -> Any:
        """dy -> dx = dy·D, D = [x > 0] the diagonal of the Jacobian (same shape as x)."""
        mask, dtype = self._require_cache()
        check_grad(self, dy, mask.shape, dtype)
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
        self.negative_slope = check_number(negative_slope, "negative_slope", "LeakyReLU")

    #: when set, forward uses this factor array instead of the one from ``x > 0`` (see ReLU)
    frozen_pattern: Any = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, ndim=(1, 2, 3, 4, 5), layout="(any shape)")
        if self.frozen_pattern is not None:
            factor = _frozen(self, x, self.frozen_pattern)
        else:
            xp = get_array_module(x)
            one, slope = x.dtype.type(1), x.dtype.type(self.negative_slope)  # keep x's dtype
            factor = xp.where(x > 0, one, slope)
        self._cache = factor
        return x * factor

    def pattern(self) -> Any:
        """The factor array of the last forward (what ``frozen_pattern`` takes)."""
        return self._require_cache()

    def backward(self, dy: Any) -> Any:
        """dy -> dx = dy·f, f = 1 where x > 0 else negative_slope (the Jacobian's diagonal)."""
        factor = self._require_cache()
        check_grad(self, dy, factor.shape, factor.dtype)
        return dy * factor

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


def _frozen(layer: Module, x: Any, pattern: Any) -> Any:
    """``pattern`` after checking that it fits ``x`` (a frozen pattern is for one batch)."""
    if tuple(pattern.shape) != tuple(x.shape):
        raise ValueError(
            f"{layer.label}: frozen_pattern has shape {tuple(pattern.shape)} but the input has "
            f"shape {tuple(x.shape)}; a frozen pattern only fits the batch it was taken from"
        )
    return pattern
