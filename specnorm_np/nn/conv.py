"""2-D convolution, channels-last: a Linear layer applied to every patch of the input.

With the patch matrix ``P = im2col(x)`` (N·H'·W', kh·kw·in; see :mod:`specnorm_np.ops.im2col`)
and the kernel's matrix view ``W = weight.reshape(out, -1)`` (the paper's matrix of the layer)::

    y  = P Wᵀ + b                      (N·H'·W', out), reshaped to (N, H', W', out)

so the backward pass is Linear's, applied to the patch rows (dY = dy.reshape(-1, out))::

    dW = dYᵀ P      db = 1ᵀ dY      dP = dY W      dx = col2im(dP)

(col2im, the adjoint of im2col, adds each patch's gradient back onto its window).

:class:`Conv2d` computes exactly these lines when ``implementation = "reference"``. By default
(``"fast"``) it calls the functions of :mod:`specnorm_np.ops.conv`, which compute the same
numbers by batch chunks in reused scratch memory, with dx by a flipped-kernel convolution where
that is cheaper (stride 1); the tests check that both implementations agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from specnorm_np._validation import check_choice, check_float_dtype, check_int
from specnorm_np.backend import get_array_module
from specnorm_np.nn._checks import check_grad, check_input
from specnorm_np.nn.init import kaiming_normal
from specnorm_np.nn.module import Module, Parameter
from specnorm_np.ops.conv import (
    conv2d,
    conv2d_input_grad,
    conv2d_input_grad_reference,
    conv2d_weight_grad,
)
from specnorm_np.ops.im2col import as_pair, col2im, conv_output_hw, im2col
from specnorm_np.ops.workspace import Workspace

__all__ = [
    "Conv2d",
    "conv2d",
    "conv2d_input_grad",
    "conv2d_input_grad_col2im",
    "conv2d_weight_grad",
]

#: the textbook input gradient ``col2im(dy_mat @ W_mat)``, under its former name
conv2d_input_grad_col2im = conv2d_input_grad_reference

IMPLEMENTATIONS = ("fast", "reference")


class Conv2d(Module):
    """2-D convolution on channels-last input, ``y = conv(x, W) + b``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
        (kh, kw); non-square kernels allowed.
    stride : int or (int, int), default 1
    padding : int or (int, int), default 0
        Zero padding added on each side of H and W.
    bias : bool
        Learn a bias ``b`` of shape (out_channels,), initialised to zero.
    rng : numpy.random.Generator or int or None
        Seeds the He (Kaiming) normal initialisation of ``weight``, fan_in = in·kh·kw.
    dtype : dtype
        float32 by default.

    Shapes: x (N, H, W, in) -> y (N, H', W', out) with ``H' = (H + 2·ph - kh) // sh + 1``
    (likewise W'). ``weight`` is (out, kh, kw, in); ``weight.reshape(out, -1)`` is the paper's
    matrix view of the kernel. ``input_hw`` is the (H, W) of the last forward input.

    ``implementation`` (attribute): ``"fast"`` (default) runs the chunked products of
    :mod:`specnorm_np.ops.conv`; ``"reference"`` runs the plain formulas of the module
    docstring (one im2col of the whole batch, one matrix product each). Both give the same
    numbers up to rounding. ``input_grad_method`` (``"auto"``, ``"convolution"`` or
    ``"col2im"``) picks how the fast implementation computes dx (see
    :func:`~specnorm_np.ops.conv.conv2d_input_grad`).

    Forward keeps a reference to x (not its patch matrix). The fast implementation keeps
    chunk-sized scratch buffers (patches, padded input, dilated gradient) in a
    :class:`~specnorm_np.ops.workspace.Workspace` between steps; ``model.to()`` and
    ``astype()`` drop them.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
        *,
        rng: np.random.Generator | int | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", "Conv2d", minimum=1)
        self.out_channels = check_int(out_channels, "out_channels", "Conv2d", minimum=1)
        self.kernel_size = as_pair(kernel_size, "kernel_size", "Conv2d", 1)
        self.stride = as_pair(stride, "stride", "Conv2d", 1)
        self.padding = as_pair(padding, "padding", "Conv2d", 0)
        dtype = check_float_dtype(dtype, "Conv2d")
        kh, kw = self.kernel_size
        shape = (self.out_channels, kh, kw, self.in_channels)
        w = kaiming_normal(shape, fan_in=self.in_channels * kh * kw, rng=rng, dtype=dtype)
        self.weight = Parameter(w, "weight", regularize=True)
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype), "bias") if bias else None
        self.input_hw: tuple[int, int] | None = None
        self.implementation = "fast"
        self.input_grad_method = "auto"
        self._workspace = Workspace()

    def _fast(self) -> bool:
        if self.implementation == "fast":
            return True
        check_choice(self.implementation, "implementation", self.label, IMPLEMENTATIONS)
        return False

    def forward(self, x: Any) -> Any:
        """x (N, H, W, in) -> y (N, H', W', out): ``y = im2col(x) @ W_matᵀ + b``."""
        check_input(self, x, ndim=4, layout="(N, H, W, C)", last_dim=self.in_channels,
                    dtype=self.weight.data.dtype)
        n, h, w, _ = x.shape
        ho, wo = conv_output_hw((h, w), self.kernel_size, self.stride, self.padding,
                                owner=self.label)
        weight = self.weight.data
        if self._fast():  # the same product by batch chunks, in reused scratch memory
            y = conv2d(x, weight, self.stride, self.padding, workspace=self._workspace)
        else:
            patches = im2col(x, self.kernel_size, self.stride, self.padding)  # P
            y = (patches @ weight.reshape(self.out_channels, -1).T).reshape(  # P Wᵀ
                n, ho, wo, self.out_channels)
        if self.bias is not None:
            y += self.bias.data
        self.input_hw = (h, w)
        self._cache = (x, tuple(y.shape))
        return y

    def backward(self, dy: Any) -> Any:
        """dy (N, H', W', out) -> dx (N, H, W, in); sets ``weight.grad`` and ``bias.grad``.

        y = P Wᵀ + b is Linear's map applied to every patch row of P = im2col(x), so as in
        Linear (with dY = dy.reshape(-1, out)): dW = dYᵀ P, db = 1ᵀ dY, dP = dY W, and
        dx = col2im(dP), col2im (the adjoint of im2col) summing each patch back onto its window.
        """
        self.backward_weights(dy)
        x, _ = self._cache
        weight = self.weight.data
        if self._fast():  # chunked; for stride 1 a flipped-kernel convolution (ops.conv)
            return conv2d_input_grad(dy, weight, x.shape[1:3], self.stride, self.padding,
                                     method=self.input_grad_method, workspace=self._workspace)
        patch_grad = dy.reshape(-1, self.out_channels) @ weight.reshape(self.out_channels, -1)
        return col2im(patch_grad, x.shape, self.kernel_size, self.stride, self.padding)

    def backward_weights(self, dy: Any) -> None:
        """Set dL/dW = dYᵀ P and dL/db = 1ᵀ dY (see :meth:`backward`) without computing dL/dx."""
        x, out_shape = self._require_cache()
        check_grad(self, dy, out_shape, x.dtype)
        xp = get_array_module(dy)
        dy_mat = dy.reshape(-1, self.out_channels)  # dY (N·H'·W', out)
        if self._fast():  # the same sum of products by batch chunks, patches rebuilt per chunk
            self.weight.grad = conv2d_weight_grad(x, dy, self.kernel_size, self.stride,
                                                  self.padding, workspace=self._workspace)
        else:
            patches = im2col(x, self.kernel_size, self.stride, self.padding)  # P
            self.weight.grad = (dy_mat.T @ patches).reshape(self.weight.shape)  # dYᵀ P
        if self.bias is not None:  # 1ᵀ dY: column sums as one matrix-vector product
            self.bias.grad = xp.ones(dy_mat.shape[0], dtype=dy.dtype) @ dy_mat

    def _reset_workspace(self) -> None:
        self._workspace = Workspace()

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
        )
