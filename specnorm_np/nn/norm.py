"""Batch normalisation (Ioffe & Szegedy, 2015) with PyTorch's conventions, channels-last.

``BatchNorm1d`` normalises (N, C) inputs and ``BatchNorm2d`` (N, H, W, C) inputs; both work on
the (M, C) matrix view of the input (M = N for 1-D, M = N·H·W for 2-D), so one implementation
serves both. Per channel c, with statistics over the M rows::

    training:   μ = (1/M) Σ x,   σ² = (1/M) Σ (x - μ)²          (biased, used to normalise)
                running_mean ← (1 - momentum)·running_mean + momentum·μ
                running_var  ← (1 - momentum)·running_var  + momentum·σ²·M/(M - 1)   (unbiased)
    evaluation: μ, σ² = running_mean, running_var
    both:       x̂ = (x - μ) / √(σ² + eps),   y = γ·x̂ + β

Per-channel sums are computed as ``ones(M) @ X``: a matrix-vector product is a single BLAS pass
over the (M, C) matrix, where ``X.sum(axis=0)`` is a slower strided reduction in NumPy.

Statistics are accumulated in the input's dtype. Should a float32 variance overflow (inputs
beyond about ±1e19, whose squares exceed float32's range), the batch's statistics are computed
again in float64, as PyTorch always does on the CPU, so the output is still normalised; for
ordinary inputs the float32 result is unchanged. (The running variance is stored in the layer's
dtype: for such inputs it is +Inf in float32, as in PyTorch.)

An empty batch (N = 0) gives an empty output and leaves the running statistics alone; its
parameter gradients are zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from specnorm_np._validation import check_choice, check_float_dtype, check_int, check_number
from specnorm_np.backend import get_array_module
from specnorm_np.nn._checks import check_grad, check_input
from specnorm_np.nn.module import Module, Parameter

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class _BatchNorm(Module):
    """Shared implementation; subclasses fix the expected input rank and layout.

    Parameters
    ----------
    num_features : int
        C, the size of the last (channel / feature) axis.
    eps : float
        Added to the variance before the square root, as in PyTorch (1e-5).
    momentum : float
        Weight of the current batch in the running statistics, in [0, 1] (PyTorch's 0.1).
    dtype : dtype
        float32 by default.

    Attributes
    ----------
    weight, bias : Parameter (C,)
        γ (ones) and β (zeros); ``regularize=False`` (the paper regularizes only W matrices).
    running_mean, running_var : ndarray (C,)
        Buffers (saved by ``state_dict``), initialised to zeros and ones.
    """

    _ndim = 2
    _layout = "(N, C)"

    #: ``"fast"`` (the collapsed formula of :meth:`backward`) or ``"reference"`` (the long-hand
    #: chain rule through x̂, σ² and μ, :meth:`_backward_reference`); both give the same dx
    implementation = "fast"

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        *,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_features = check_int(num_features, "num_features", name, minimum=1)
        self.eps = check_number(eps, "eps", name, minimum=0, open_low=True)
        self.momentum = check_number(momentum, "momentum", name, minimum=0, maximum=1)
        dtype = check_float_dtype(dtype, name)
        self.weight = Parameter(np.ones(self.num_features, dtype=dtype), "weight")
        self.bias = Parameter(np.zeros(self.num_features, dtype=dtype), "bias")
        self.register_buffer("running_mean", np.zeros(self.num_features, dtype=dtype))
        self.register_buffer("running_var", np.ones(self.num_features, dtype=dtype))
        self._input_shape: tuple[int, ...] = ()  # shape of the last forward input

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        """x (N, C) or (N, H, W, C) -> y of the same shape."""
        check_input(self, x, ndim=self._ndim, layout=self._layout, last_dim=self.num_features,
                    dtype=self.weight.data.dtype)
        rows = x.reshape(-1, self.num_features)  # (M, C) view of a contiguous input
        if self.training:
            y = self._forward_train(rows)
        else:
            y = self._forward_eval(rows)
        self._input_shape = tuple(x.shape)
        return y.reshape(x.shape)

    def _forward_train(self, rows: Any) -> Any:
        xp = get_array_module(rows)
        m = rows.shape[0]
        if m == 0:  # an empty batch: no statistics to take, the running ones stay as they are
            self._cache = ("train", rows, xp.ones(self.num_features, dtype=rows.dtype))
            return rows.copy()
        if m < 2:
            raise ValueError(
                f"{self.label}: training mode needs more than one value per channel to compute "
                f"batch statistics, got {m} (input with a single row per channel); use a larger "
                "batch or call eval()"
            )
        ones = xp.ones(m, dtype=rows.dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # detected just below
            mean = (ones @ rows) / m
            centered = rows - mean
            var = (ones @ (centered * centered)) / m  # biased: the one used to normalise
        if not bool(xp.isfinite(var).all()):  # a float32 sum overflowed: redo it in float64
            mean, centered, var = _statistics_in_float64(rows)
        inv_std = (1.0 / xp.sqrt(var + self.eps)).astype(rows.dtype, copy=False)
        # Speed: y = γ·x̂ + β is computed as (x - μ)·(γ/σ) + β, folding 1/σ into the per-channel
        # scale, so x̂ = (x - μ)/σ is never materialised (one pass over the (M, C) data less).
        # Backward keeps (x - μ) and 1/σ and applies 1/σ to per-channel sums instead.
        y = centered * (self.weight.data * inv_std)
        y += self.bias.data
        keep = 1.0 - self.momentum
        with np.errstate(over="ignore"):  # a float64 variance beyond float32's range: +Inf
            self.running_mean = (keep * self.running_mean + self.momentum * mean).astype(
                self.running_mean.dtype, copy=False)
            self.running_var = (keep * self.running_var
                                + self.momentum * (var * (m / (m - 1)))).astype(
                self.running_var.dtype, copy=False)
        self._cache = ("train", centered, inv_std)
        return y

    def _forward_eval(self, rows: Any) -> Any:
        xp = get_array_module(rows)
        inv_std = 1.0 / xp.sqrt(self.running_var + self.eps)
        scale = self.weight.data * inv_std
        shift = self.bias.data - self.running_mean * scale
        y = rows * scale  # the affine map y = scale·x + shift: two passes over the data
        y += shift
        self._cache = ("eval", rows, self.running_mean, inv_std)
        return y

    # ---- backward -----------------------------------------------------------------------------
    def backward(self, dy: Any) -> Any:
        """dy (same shape as the input) -> dx; sets ``weight.grad`` and ``bias.grad`` (C,).

        In both modes dβ = Σ_m dy and dγ = Σ_m dy·x̂ (sums over the M rows of a channel).

        Training mode (μ and σ depend on x). With x̂ = (x - μ)/σ and y = γx̂ + β, the chain rule
        through μ and σ collapses to

            dx = (1/M)·(γ/σ)·(M·dy - Σ dy - x̂·Σ(dy·x̂)),

        i.e. dy·γ/σ with its mean and its component along x̂ removed (the normalisation makes
        the output invariant to shifting or scaling a channel of x).

        Evaluation mode: μ and σ are constants, y is the affine map γ/σ·(x - μ) + β, and
        dx = dy·γ/σ.
        """
        cache = self._require_cache()
        mode = cache[0]
        check_grad(self, dy, self._input_shape, self.weight.data.dtype)
        xp = get_array_module(dy)
        dy_rows = dy.reshape(-1, self.num_features)
        m = dy_rows.shape[0]
        ones = xp.ones(m, dtype=dy_rows.dtype)
        # centered = x - μ (rows of the M×C view); x̂ = centered·(1/σ) is never formed: the
        # per-channel factor 1/σ is applied to the (C,) sums instead (see _forward_train)
        if mode == "train":
            _, centered, inv_std = cache
        else:
            _, rows, mean, inv_std = cache
            centered = rows - mean
        if self.implementation != "fast" and check_choice(
                self.implementation, "implementation", self.label,
                ("fast", "reference")) == "reference":
            return self._backward_reference(dy_rows, centered, inv_std, mode).reshape(dy.shape)
        sum_dy = ones @ dy_rows
        sum_dy_x_hat = (ones @ (dy_rows * centered)) * inv_std  # Σ dy·x̂ = (1/σ)·Σ dy·(x - μ)
        self.bias.grad = sum_dy
        self.weight.grad = sum_dy_x_hat
        scale = self.weight.data * inv_std  # γ/σ per channel
        if mode == "eval" or m == 0:  # (an empty batch has nothing to centre)
            dx = dy_rows * scale
        else:
            dx = centered * (sum_dy_x_hat * inv_std / -m)  # -x̂·Σ(dy·x̂)/M
            dx -= sum_dy / m  # -Σdy/M
            dx += dy_rows  # +dy
            dx *= scale  # ·γ/σ
        return dx.reshape(dy.shape)

    def _backward_reference(self, dy_rows: Any, centered: Any, inv_std: Any, mode: str) -> Any:
        """The long-hand backward, one node of the graph at a time (rows (M, C), sums over M).

        Forward: μ = mean(x), v = mean((x - μ)²), x̂ = (x - μ)·(v + eps)^(-1/2), y = γx̂ + β.
        Backward, in reverse: dx̂ = dy·γ; dv = Σ dx̂·(x - μ)·(-1/2)(v + eps)^(-3/2);
        dμ = -Σ dx̂·(v + eps)^(-1/2) + dv·(-2/M)·Σ(x - μ); dx = dx̂·(v + eps)^(-1/2) +
        dv·2(x - μ)/M + dμ/M. In evaluation mode μ and v are constants: dx = dx̂·(v + eps)^(-1/2).
        """
        m = dy_rows.shape[0]
        x_hat = centered * inv_std
        self.bias.grad = dy_rows.sum(axis=0)
        self.weight.grad = (dy_rows * x_hat).sum(axis=0)
        dx_hat = dy_rows * self.weight.data
        if mode == "eval" or m == 0:
            return dx_hat * inv_std
        dvar = (dx_hat * centered).sum(axis=0) * (-0.5) * inv_std**3
        dmean = -dx_hat.sum(axis=0) * inv_std + dvar * (-2.0 / m) * centered.sum(axis=0)
        return dx_hat * inv_std + dvar * (2.0 / m) * centered + dmean / m

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


def _statistics_in_float64(rows: Any) -> tuple[Any, Any, Any]:
    """(μ, x - μ, σ²) of the (M, C) rows accumulated in float64; x - μ back in the rows' dtype.

    For inputs whose float32 squares overflow (|x| ≳ 1e19): the variance can exceed float32's
    range, but 1/σ and x - μ stay within it.
    """
    xp = get_array_module(rows)
    wide = rows.astype(xp.float64)
    mean = wide.mean(axis=0)
    centered = wide - mean
    var = (centered * centered).mean(axis=0)
    return mean, centered.astype(rows.dtype), var


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) features (e.g. after a Linear layer).

    See :class:`_BatchNorm` for the parameters and the module docstring for the formulas.
    """

    _ndim = 2
    _layout = "(N, C)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, H, W, C) feature maps, statistics over N, H and W per channel.

    See :class:`_BatchNorm` for the parameters and the module docstring for the formulas.
    """

    _ndim = 4
    _layout = "(N, H, W, C)"
