"""Pooling layers on channels-last input (N, H, W, C).

Both window poolings are loops over the kh·kw offsets (i, j) of the window, like im2col: for a
fixed offset, the input entries it reads for *all* output positions form one strided slice
``x[:, i : i + sh·(H'-1) + 1 : sh, j : j + sw·(W'-1) + 1 : sw, :]`` of shape (N, H', W', C),
and ``H' = (H - kh) // sh + 1`` (rows no window reaches are dropped, as in PyTorch).

Fast path: when windows tile the input (stride == kernel, the usual 2×2/2 pooling), that slice
is block (i, j) of the view ``x.reshape(N, H', kh, W', kw, C)`` and every input pixel lies in at
most one window, so backward *assigns* each block of dx once. With overlapping windows
(stride < kernel) a pixel belongs to several windows and backward *adds* (``+=``) the
contribution of every window into dx.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from specnorm_np._validation import check_choice
from specnorm_np.backend import get_array_module
from specnorm_np.nn._checks import check_grad, check_input
from specnorm_np.nn.module import Module
from specnorm_np.ops.im2col import as_pair

__all__ = ["MaxPool2d", "AvgPool2d", "GlobalAvgPool2d"]

_LAYOUT = "(N, H, W, C)"


class _WindowPool2d(Module):
    """Shared parsing, shape checks and window slicing of MaxPool2d and AvgPool2d."""

    def __init__(self, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        self.kernel_size = as_pair(kernel_size, "kernel_size", name, 1)
        self.stride = self.kernel_size if stride is None else as_pair(stride, "stride", name, 1)

    def _output_hw(self, x: Any) -> tuple[int, int]:
        check_input(self, x, ndim=4, layout=_LAYOUT)
        (h, w), (kh, kw), (sh, sw) = x.shape[1:3], self.kernel_size, self.stride
        if kh > h or kw > w:
            raise ValueError(
                f"{self.label}: pooling window {kh}x{kw} is larger than the input {h}x{w} "
                f"(input shape {tuple(x.shape)})"
            )
        return (h - kh) // sh + 1, (w - kw) // sw + 1

    def _windows(self, output_hw: tuple[int, int]) -> Iterator[tuple[int, tuple[slice, ...]]]:
        """Yield (k, index) per window offset: ``x[index]`` is (N, H', W', C), k = i·kw + j."""
        (kh, kw), (sh, sw), (ho, wo) = self.kernel_size, self.stride, output_hw
        for i in range(kh):
            for j in range(kw):
                rows = slice(i, i + sh * (ho - 1) + 1, sh)
                cols = slice(j, j + sw * (wo - 1) + 1, sw)
                yield i * kw + j, (slice(None), rows, cols, slice(None))

    def _tiles(self, x_shape: tuple[int, ...]) -> bool:
        """True when the windows exactly tile the input (the reshape fast path applies)."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return (kh, kw) == (sh, sw) and x_shape[1] % kh == 0 and x_shape[2] % kw == 0

    def _scatter(self, x_shape: tuple[int, ...], output_hw: tuple[int, int], dy: Any,
                 block: Any) -> Any:
        """dx (N, H, W, C) from ``block(k)`` = the (N, H', W', C) gradient of window offset k."""
        (kh, kw), (ho, wo) = self.kernel_size, output_hw
        xp = get_array_module(dy)
        if self._tiles(x_shape):
            dx = xp.empty(x_shape, dtype=dy.dtype)
            tiles = dx.reshape(x_shape[0], ho, kh, wo, kw, x_shape[3])  # a view of dx
            for k, _ in self._windows(output_hw):
                tiles[:, :, k // kw, :, k % kw, :] = block(k)  # each pixel written once
            return dx
        dx = xp.zeros(x_shape, dtype=dy.dtype)
        for k, index in self._windows(output_hw):
            dx[index] += block(k)  # overlapping windows: a pixel sums the gradient of each window
        return dx

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class MaxPool2d(_WindowPool2d):
    """Maximum over kh×kw windows: (N, H, W, C) -> (N, H', W', C).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int) or None
        Defaults to ``kernel_size`` (non-overlapping windows); smaller strides overlap.

    Notes
    -----
    Backward: ``y = x[argmax]`` in each window, so dy/dx is 1 at the window's maximum and 0
    elsewhere; dx routes each dy entry to the position of its window's maximum, and a pixel
    that is the maximum of several overlapping windows receives the sum of their gradients.

    Ties: the *first* maximum of the window in row-major order (smallest i, then smallest j)
    gets the whole gradient, as in PyTorch. That is a valid subgradient; sending dy to every
    tied entry would count it several times. (After a ReLU, tied zeros are common, but ReLU's
    own backward zeroes their gradient anyway.)

    Forward keeps only the winning offset k = i·kw + j per output entry (one byte each for
    windows up to 255 entries), not the input; backward then routes dy offset by offset, one
    strided slice per offset (:meth:`backward`). With ``implementation = "reference"`` forward
    also keeps x, and backward is the long-hand loop over output positions
    (:meth:`_backward_reference`); the tests check that both give the same dx.
    """

    #: ``"fast"`` (offsets kept by forward, one slice per window offset) or ``"reference"``
    #: (keep x and loop over output positions); see the class docstring
    implementation = "fast"

    #: when set (the window offsets of an earlier forward, see :meth:`pattern`), forward takes
    #: each window's entry at that offset instead of its maximum: the layer is then linear
    #: (metrics.make_hessian_vector_product uses this for exact second derivatives)
    frozen_pattern: Any = None

    def pattern(self) -> Any:
        """The winning offset k = i·kw + j of every output entry in the last forward."""
        return self._require_cache()[0]

    def forward(self, x: Any) -> Any:
        """x (N, H, W, C) -> y (N, H', W', C)."""
        output_hw = self._output_hw(x)
        if self.frozen_pattern is not None:
            return self._forward_frozen(x, output_hw)
        xp = get_array_module(x)
        kh, kw = self.kernel_size
        index_dtype = xp.uint8 if kh * kw <= 255 else xp.int32
        y = index = None
        for k, window_index in self._windows(output_hw):
            window = x[window_index]
            if y is None:
                y = window.copy()
                index = xp.zeros(y.shape, dtype=index_dtype)
                continue
            better = window > y  # strict: on a tie the earlier offset keeps the maximum
            xp.maximum(y, window, out=y)
            index *= ~better  # where this offset wins, forget the old winner ...
            index += better * index.dtype.type(k)  # ... and record k (integer math, no float)
        self._keep(index, x, output_hw)
        return y

    def _keep(self, index: Any, x: Any, output_hw: tuple[int, int]) -> None:
        keep_input = self.implementation != "fast" and check_choice(
            self.implementation, "implementation", self.label, ("fast", "reference")) == "reference"
        self._cache = (index, tuple(x.shape), output_hw, x.dtype, x if keep_input else None)

    def _forward_frozen(self, x: Any, output_hw: tuple[int, int]) -> Any:
        index = self.frozen_pattern
        expected = (x.shape[0], *output_hw, x.shape[3])
        if tuple(index.shape) != expected:
            raise ValueError(
                f"{self.label}: frozen_pattern has shape {tuple(index.shape)} but this input "
                f"gives outputs of shape {expected}; a frozen pattern only fits its own batch"
            )
        y = None
        for k, window_index in self._windows(output_hw):
            picked = x[window_index] * (index == k)  # the entry at offset k where k was chosen
            y = picked if y is None else y + picked
        self._keep(index, x, output_hw)
        return y

    def backward(self, dy: Any) -> Any:
        """dy (N, H', W', C) -> dx (N, H, W, C): dy goes to each window's (first) maximum.

        ``y[p, q] = x[p·sh + i*, q·sw + j*]`` with (i*, j*) the window's winning offset, so
        ∂y[p, q]/∂x is 1 at that entry and 0 elsewhere: for each offset k, the entries of dy whose
        window was won by k go to the strided slice of dx that offset k reads (summed on overlaps).
        """
        index, x_shape, output_hw, dtype, x = self._require_cache()
        check_grad(self, dy, index.shape, dtype)
        if x is not None:
            return self._backward_reference(dy, x)
        return self._scatter(x_shape, output_hw, dy, lambda k: dy * (index == k))

    def _backward_reference(self, dy: Any, x: Any) -> Any:
        """The long-hand backward: for every output position (p, q), find the first maximum of
        its window of x (or the frozen pattern's offset) and add dy[:, p, q, :] there."""
        xp = get_array_module(dy)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        n, c = x.shape[0], x.shape[3]
        dx = xp.zeros(x.shape, dtype=dy.dtype)
        offsets = xp.arange(kh * kw).reshape(1, kh * kw, 1)
        for p in range(dy.shape[1]):
            for q in range(dy.shape[2]):
                rows, cols = slice(p * sh, p * sh + kh), slice(q * sw, q * sw + kw)
                if self.frozen_pattern is None:  # argmax returns the first maximum on ties
                    winner = x[:, rows, cols, :].reshape(n, kh * kw, c).argmax(axis=1)
                else:
                    winner = self.frozen_pattern[:, p, q, :]
                one_hot = offsets == winner.reshape(n, 1, c)  # (N, kh·kw, C)
                routed = one_hot * dy[:, p, q, :].reshape(n, 1, c)
                dx[:, rows, cols, :] += routed.reshape(n, kh, kw, c)
        return dx


class AvgPool2d(_WindowPool2d):
    """Mean over kh×kw windows: (N, H, W, C) -> (N, H', W', C) (no padding).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int) or None
        Defaults to ``kernel_size``; smaller strides overlap.

    Notes
    -----
    Backward: ``y[p, q] = (1 / (kh·kw)) Σ_{i, j} x[p·sh + i, q·sw + j]``, so every entry of a
    window gets ``dy[p, q] / (kh·kw)``; with overlapping windows a pixel sums these over all
    windows that contain it.
    """

    def forward(self, x: Any) -> Any:
        """x (N, H, W, C) -> y (N, H', W', C)."""
        output_hw = self._output_hw(x)
        y = None
        for _, window_index in self._windows(output_hw):
            if y is None:
                y = x[window_index].copy()
            else:
                y += x[window_index]
        y *= 1.0 / (self.kernel_size[0] * self.kernel_size[1])  # Python float keeps the dtype
        self._cache = (tuple(x.shape), output_hw, tuple(y.shape), x.dtype)
        return y

    def backward(self, dy: Any) -> Any:
        """dy (N, H', W', C) -> dx (N, H, W, C): dy / (kh·kw) spread over each window.

        ``y[p, q]`` is the mean of its kh·kw window, so ∂y[p, q]/∂x = 1/(kh·kw) on the window
        and 0 elsewhere; overlapping windows add their shares.
        """
        x_shape, output_hw, y_shape, dtype = self._require_cache()
        check_grad(self, dy, y_shape, dtype)
        share = dy * (1.0 / (self.kernel_size[0] * self.kernel_size[1]))
        return self._scatter(x_shape, output_hw, dy, lambda k: share)


class GlobalAvgPool2d(Module):
    """Mean over all spatial positions: (N, H, W, C) -> (N, C).

    Notes
    -----
    Backward: ``y[n, c] = (1 / (H·W)) Σ_{a, b} x[n, a, b, c]``, so
    ``dx[n, a, b, c] = dy[n, c] / (H·W)`` for every position (a, b).
    """

    def forward(self, x: Any) -> Any:
        """x (N, H, W, C) -> y (N, C)."""
        check_input(self, x, ndim=4, layout=_LAYOUT)
        n, h, w, c = x.shape
        if h * w == 0:
            raise ValueError(f"{self.label}: input has no spatial positions, shape {x.shape}")
        self._cache = (tuple(x.shape), x.dtype)
        # summing over the middle axis adds whole contiguous rows of C values at a time
        return x.reshape(n, h * w, c).sum(axis=1) * (1.0 / (h * w))

    def backward(self, dy: Any) -> Any:
        """dy (N, C) -> dx (N, H, W, C): y is the mean of the H·W positions, so each position
        gets dy / (H·W)."""
        x_shape, dtype = self._require_cache()
        n, h, w, c = x_shape
        check_grad(self, dy, (n, c), dtype)
        dx = get_array_module(dy).empty(x_shape, dtype=dy.dtype)
        dx[...] = (dy * (1.0 / (h * w)))[:, None, None, :]
        return dx
