"""Fully connected layer."""

from __future__ import annotations

from typing import Any

import numpy as np

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
        if not all(isinstance(n, int) and not isinstance(n, bool)
                   for n in (in_features, out_features)):
            raise ValueError(
                f"Linear: in_features and out_features must be ints, got {in_features!r}, "
                f"{out_features!r}"
            )
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"Linear: in_features and out_features must be >= 1, "
                f"got {in_features}, {out_features}"
            )
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
        # a rank-one term requested for an earlier pass is cancelled by a new one (whoever
        # requested it then adds it itself; see SpectralNormRegularizer.stage)
        self.weight.pending_rank_one = None
        return y

    def backward(self, dy: Any) -> Any:
        """dy (N, out) -> dx (N, in).

        With y_nj = Σ_i x_ni W_ji + b_j:
        dL/dW = dyᵀ x (out, in),  dL/db = Σ_n dy_n (out,),  dL/dx = dy W (N, in).
        (dL/dW may also carry a requested rank-one term; see :meth:`backward_weights`.)
        """
        self.backward_weights(dy)
        return dy @ self.weight.data

    def backward_weights(self, dy: Any) -> None:
        """Set dL/dW and dL/db (see :meth:`backward`) without computing dL/dx.

        If a rank-one term a·bᵀ was requested on the weight (the spectral regularizer's
        λσ·u·vᵀ, see ``SpectralNormRegularizer.stage``), it is added to dL/dW here when that is
        cheaper than a separate pass: dyᵀx = Σ_n dy_n x_nᵀ is already a sum of N rank-one
        matrices, so a·bᵀ is one more "example". Appending a to dy and b to x lets the same
        matrix product add it, at the price of copying dy and x (N·(in + out) numbers); a
        separate ``grad += a bᵀ`` reads and writes the in·out gradient instead. So the term is
        folded only while N·(in + out) <= in·out (up to N ≈ 440 for a 3072x512 weight) and
        otherwise left to the requester, who checks ``weight.rank_one_in_grad()``.
        """
        x = self._require_cache()
        check_grad(self, dy, (x.shape[0], self.out_features))
        xp = get_array_module(dy)
        extra = self.weight.take_rank_one()
        n = x.shape[0]
        if extra is not None and n * (self.in_features + self.out_features) <= (
                self.in_features * self.out_features):
            a, b = extra
            self.weight.grad = (xp.concatenate([dy, a[None, :]]).T
                                @ xp.concatenate([x, b[None, :]]))
            self.weight.mark_rank_one_folded()
        else:
            self.weight.grad = dy.T @ x
        if self.bias is not None:
            # column sums as a matrix-vector product: one BLAS call instead of a slow reduction
            self.bias.grad = xp.ones(dy.shape[0], dtype=dy.dtype) @ dy

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"
