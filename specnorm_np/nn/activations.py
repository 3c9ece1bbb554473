"""Element-wise activations."""

from __future__ import annotations

from typing import Any

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
    """Placeholder: being written (see issue #3)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("LeakyReLU is being written")
