"""Fully connected layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from specnorm_np._validation import check_float_dtype, check_int
from specnorm_np.backend import get_array_module
from specnorm_np.nn._checks import check_grad, check_input
from specnorm_np.nn.init import kaiming_normal
from specnorm_np.nn.module import Module, Parameter

__all__ = ["Linear"]


class Linear(Module):
    """``y = x @ W.T + b``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
        Whether to learn an additive bias ``b`` of shape ``(out_features,)``.
    rng : numpy.random.Generator or int or None
        Seeds the He (Kaiming) normal initialisation of ``W``; the bias starts at zero.
    dtype : dtype
        float32 by default.

    Shapes: ``x`` (N, in_features) -> ``y`` (N, out_features); ``weight`` (out, in), like PyTorch,
    which is already the paper's matrix W of the layer.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rng: np.random.Generator | int | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        in_features = check_int(in_features, "in_features", "Linear", minimum=1)
        out_features = check_int(out_features, "out_features", "Linear", minimum=1)
        dtype = check_float_dtype(dtype, "Linear")
        self.in_features, self.out_features = in_features, out_features
        w = kaiming_normal((out_features, in_features), fan_in=in_features, rng=rng, dtype=dtype)
        self.weight = Parameter(w, "weight", regularize=True)
        self.bias = Parameter(np.zeros(out_features, dtype=dtype), "bias") if bias else None

    def forward(self, x: Any) -> Any:
        """x (N, in) -> y (N, out)."""
        check_input(self, x, ndim=2, layout="(N, in_features)", last_dim=self.in_features,
                    dtype=self.weight.data.dtype,
                    last_name="features")
        y = x @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        self._cache = x
        return y

    def backward(self, dy: Any) -> Any:
        """dy (N, out) -> dx (N, in); sets dL/dW and dL/db.

        With y_nj = Σ_i x_ni W_ji + b_j, the chain rule gives, summed over the batch:
        dL/dW_ji = Σ_n dy_nj x_ni, dL/db_j = Σ_n dy_nj, dL/dx_ni = Σ_j dy_nj W_ji.
        """
        self.backward_weights(dy)
        dx = dy @ self.weight.data  # dL/dx = dy W  (N, in)
        return dx

    def backward_weights(self, dy: Any) -> None:
        """Set dL/dW and dL/db (see :meth:`backward`) without computing dL/dx."""
        x = self._require_cache()
        check_grad(self, dy, (x.shape[0], self.out_features), x.dtype)
        xp = get_array_module(dy)
        self.weight.grad = dy.T @ x  # dL/dW = dyᵀ x  (out, in)
        if self.bias is not None:
            # dL/db = Σ_n dy_n (out,): the column sums, as a matrix-vector product (one BLAS
            # call instead of a slower reduction)
            self.bias.grad = xp.ones(dy.shape[0], dtype=dy.dtype) @ dy

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"
