"""2-D convolution, channels-last, as im2col followed by one matrix multiply.

A convolution is a Linear layer applied to every patch (see :mod:`specnorm_np.ops.im2col`)::

    patches = im2col(x)                          (N·H'·W', kh·kw·in)
    y       = patches @ W_mat.T + b              (N·H'·W', out),  W_mat = weight.reshape(out, -1)

so its backward pass is Linear's, applied to the patch matrix:

    dW_mat = dy_matᵀ @ patches      db = Σ_rows dy_mat      dpatches = dy_mat @ W_mat
    dx     = col2im(dpatches)                                   (the reference route)

For stride 1 and out ≤ 2·in channels, the layer computes dx by an equivalent but faster
route, a second convolution of dy with the flipped kernel (:func:`_input_grad_by_convolution`);
otherwise col2im is cheaper (:func:`conv2d_input_grad` explains the choice). The tests check
that both routes agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from specnorm_np.backend import get_array_module
from specnorm_np.nn._checks import check_grad, check_input
from specnorm_np.nn.init import kaiming_normal
from specnorm_np.nn.module import Module, Parameter
from specnorm_np.ops.im2col import as_pair, col2im, conv_output_hw, im2col, workspace_buffer

__all__ = [
    "Conv2d",
    "conv2d",
    "conv2d_input_grad",
    "conv2d_input_grad_col2im",
    "conv2d_weight_grad",
]


def _check_rank(owner: str, x: Any, weight: Any, x_name: str = "x") -> None:
    """``x`` (N, H, W, C) and ``weight`` (out, kh, kw, C) must be 4-D with matching C."""
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(
            f"{owner}: expected {x_name} (N, H, W, C) and weight (out, kh, kw, in), both 4-D; "
            f"got shapes {tuple(x.shape)} and {tuple(weight.shape)}"
        )


def _patches(x: Any, kernel_hw: tuple[int, int], stride: Any, padding: Any,
             workspace: dict | None, prefix: str, owner: str) -> Any:
    """im2col of ``x`` into (optionally reused) workspace buffers named ``prefix.*``."""
    xp = get_array_module(x)
    n, h, w, c = x.shape
    kh, kw = kernel_hw
    sh, sw = as_pair(stride, "stride", owner, 1)
    ph, pw = as_pair(padding, "padding", owner, 0)
    ho, wo = conv_output_hw((h, w), kernel_hw, (sh, sw), (ph, pw), owner=owner)
    if workspace is None:
        return im2col(x, kernel_hw, (sh, sw), (ph, pw))
    out = workspace_buffer(workspace, prefix + ".patches", (n, ho, wo, kh, kw, c), x.dtype, xp)
    padded = None
    if ph or pw:
        padded = workspace_buffer(workspace, prefix + ".padded", (n, h + 2 * ph, w + 2 * pw, c),
                                  x.dtype, xp)
    return im2col(x, kernel_hw, (sh, sw), (ph, pw), out=out, padded_out=padded)


def conv2d(x: Any, weight: Any, stride: Any = 1, padding: Any = 0, *,
           workspace: dict | None = None) -> Any:
    """Convolution without bias: x (N, H, W, in), weight (out, kh, kw, in) -> y (N, H', W', out).

    Zero padding, any stride. ``workspace`` (a dict) lets repeated calls reuse scratch memory.
    """
    _check_rank("conv2d", x, weight)
    out_channels, kh, kw, in_channels = weight.shape
    if x.shape[-1] != in_channels:
        raise ValueError(f"conv2d: x has {x.shape[-1]} channels, weight expects {in_channels}")
    n, h, w, _ = x.shape
    ho, wo = conv_output_hw((h, w), (kh, kw), stride, padding, owner="conv2d")
    patches = _patches(x, (kh, kw), stride, padding, workspace, "forward", "conv2d")
    return (patches @ weight.reshape(out_channels, -1).T).reshape(n, ho, wo, out_channels)


def conv2d_weight_grad(x: Any, dy: Any, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                       *, workspace: dict | None = None) -> Any:
    """dL/dW of :func:`conv2d`: x (N, H, W, in), dy (N, H', W', out) -> dW (out, kh, kw, in).

    From y_mat = patches @ W_matᵀ:  dW_mat = dy_matᵀ @ patches.
    """
    kh, kw = as_pair(kernel_size, "kernel_size", "conv2d_weight_grad", 1)
    n, h, w, in_channels = x.shape
    ho, wo = conv_output_hw((h, w), (kh, kw), stride, padding, owner="conv2d_weight_grad")
    if dy.ndim != 4 or tuple(dy.shape[:3]) != (n, ho, wo):
        raise ValueError(
            f"conv2d_weight_grad: expected dy of shape ({n}, {ho}, {wo}, out), "
            f"got {tuple(dy.shape)}"
        )
    patches = _patches(x, (kh, kw), stride, padding, workspace, "weight_grad",
                       "conv2d_weight_grad")
    out_channels = dy.shape[-1]
    return (dy.reshape(-1, out_channels).T @ patches).reshape(out_channels, kh, kw, in_channels)


def conv2d_input_grad(dy: Any, weight: Any, input_hw: tuple[int, int], stride: Any = 1,
                      padding: Any = 0, *, method: str = "auto",
                      workspace: dict | None = None) -> Any:
    """dL/dx of :func:`conv2d`: the adjoint (transpose) of the convolution with respect to x.

    Parameters
    ----------
    dy : ndarray (N, H', W', out)
    weight : ndarray (out, kh, kw, in)
    input_hw : (H, W) of the forward input.
    method : {"auto", "convolution", "col2im"}
        ``"convolution"``: the flipped-kernel convolution of :func:`_input_grad_by_convolution`.
        ``"col2im"``: :func:`conv2d_input_grad_col2im`. ``"auto"`` takes the convolution when
        stride is 1 and out ≤ 2·in, else col2im (see Notes). All give the same dx.
    workspace : dict or None
        Scratch buffers reused between calls.

    Returns
    -------
    dx : ndarray (N, H, W, in)

    Notes
    -----
    Per input pixel, the convolution route copies and multiplies kh·kw·out numbers per stride
    step (the dilated dy has sh·sw times more rows than dy, mostly zeros); col2im writes and
    scatter-adds kh·kw·in numbers. Measured single-threaded at batch 128 (3×3 kernels, this
    project's machine): 32→32 channels at 32×32, 48 ms vs 92 ms; 64→64 at 16×16, 34 vs 49;
    but 3→32 (the first layer), 35 vs 15, and stride 2 (32→64), 94 vs 32.
    """
    owner = "conv2d_input_grad"
    _check_input_grad_shapes(owner, dy, weight, input_hw, stride, padding)
    if method not in ("auto", "convolution", "col2im"):
        raise ValueError(f"{owner}: method must be 'auto', 'convolution' or 'col2im', "
                         f"got {method!r}")
    out_channels, _, _, in_channels = weight.shape
    if method == "auto":
        stride_one = as_pair(stride, "stride", owner, 1) == (1, 1)
        method = "convolution" if stride_one and out_channels <= 2 * in_channels else "col2im"
    if method == "col2im":
        return conv2d_input_grad_col2im(dy, weight, input_hw, stride, padding,
                                        workspace=workspace)
    return _input_grad_by_convolution(dy, weight, input_hw, stride, padding, workspace)


def _check_input_grad_shapes(owner: str, dy: Any, weight: Any, input_hw: tuple[int, int],
                             stride: Any, padding: Any) -> None:
    _check_rank(owner, dy, weight, x_name="dy")
    out_channels, kh, kw, _ = weight.shape
    h, w = int(input_hw[0]), int(input_hw[1])
    expected = (*conv_output_hw((h, w), (kh, kw), stride, padding, owner), out_channels)
    if tuple(dy.shape[1:]) != expected:
        raise ValueError(
            f"{owner}: dy of shape {tuple(dy.shape)} does not match a convolution of an "
            f"{h}x{w} input with weight {tuple(weight.shape)}, stride {stride}, "
            f"padding {padding} (expected (N, {expected[0]}, {expected[1]}, {expected[2]}))"
        )


def _input_grad_by_convolution(dy: Any, weight: Any, input_hw: tuple[int, int], stride: Any,
                               padding: Any, workspace: dict | None) -> Any:
    """dx as a stride-1 convolution of the dilated, padded dy with the flipped kernel.

    The trick (the reference is :func:`conv2d_input_grad_col2im`). Forward reads
    ``y[p] = Σ_i x_pad[p·s + i] W[i]`` (one axis shown, channels summed over). Hence pixel
    ``a`` of the padded input gets ``dx_pad[a] = Σ_{p, i : p·s + i = a} dy[p] W[i]``.

    1. *Dilate*: put ``dy[p]`` at row ``p·s`` of a zero array (s - 1 zeros between rows), so
       that ``dx_pad[a] = Σ_i dy_dil[a - i] W[i]`` — a full convolution with stride 1.
    2. *Flip*: with ``i' = k - 1 - i`` this is ``Σ_{i'} dy_dil[a - (k - 1) + i'] W[k - 1 - i']``,
       a plain correlation (what :func:`conv2d` computes) of ``dy_dil`` zero-padded by k - 1
       with the spatially flipped kernel, whose in and out channels swap roles
       (dy's channels are summed, x's channels come out).
    3. *Crop*: only rows ``a = ph ... ph + H - 1`` are real input, so the dilated gradient sits
       at offset ``k - 1 - ph`` in a (H + k - 1)-row buffer; entries falling outside it belong
       to windows lying wholly in the padding and contribute nothing.

    Then one im2col and one matrix multiply give dx, instead of a GEMM to patch gradients
    followed by kh·kw scatter-adds (col2im).
    """
    xp = get_array_module(dy, weight)
    out_channels, kh, kw, in_channels = weight.shape
    n, ho, wo, _ = dy.shape
    sh, sw = as_pair(stride, "stride", "conv2d_input_grad", 1)
    ph, pw = as_pair(padding, "padding", "conv2d_input_grad", 0)
    h, w = int(input_hw[0]), int(input_hw[1])
    top, left = kh - 1 - ph, kw - 1 - pw  # where dy[0, 0] lands in the buffer (may be < 0)
    dilated = workspace_buffer(workspace, "input_grad.dilated", (n, h + kh - 1, w + kw - 1,
                               out_channels), dy.dtype, xp, tag=(kh, kw, sh, sw, ph, pw, ho, wo))
    # rows p with 0 <= p·sh + top <= h + kh - 2 fit in the buffer (others touch only padding)
    p_first, p_last = max(0, -(top // sh)), min(ho - 1, (h + kh - 2 - top) // sh)
    q_first, q_last = max(0, -(left // sw)), min(wo - 1, (w + kw - 2 - left) // sw)
    if p_last >= p_first and q_last >= q_first:
        u, v = p_first * sh + top, q_first * sw + left
        dilated[:, u : u + sh * (p_last - p_first) + 1 : sh,
                v : v + sw * (q_last - q_first) + 1 : sw, :] = (
            dy[:, p_first : p_last + 1, q_first : q_last + 1, :]
        )
    # flipped kernel as a (kh·kw·out, in) matrix, rows in im2col's (kh, kw, C=out) order
    flipped = weight[:, ::-1, ::-1, :].transpose(1, 2, 0, 3).reshape(kh * kw * out_channels,
                                                                     in_channels)
    patches = _patches(dilated, (kh, kw), 1, 0, workspace, "input_grad", "conv2d_input_grad")
    return (patches @ flipped).reshape(n, h, w, in_channels)


def conv2d_input_grad_col2im(dy: Any, weight: Any, input_hw: tuple[int, int], stride: Any = 1,
                             padding: Any = 0, *, workspace: dict | None = None) -> Any:
    """dL/dx the textbook way: ``col2im(dy_mat @ W_mat)``; the reference for the fast route.

    dy (N, H', W', out), weight (out, kh, kw, in) -> dx (N, H, W, in). From
    ``y_mat = patches @ W_matᵀ``: ``dpatches = dy_mat @ W_mat``, and col2im (the adjoint of
    im2col) adds each patch gradient back onto its window.
    """
    _check_input_grad_shapes("conv2d_input_grad_col2im", dy, weight, input_hw, stride, padding)
    xp = get_array_module(dy, weight)
    out_channels, kh, kw, in_channels = weight.shape
    dy_mat = dy.reshape(-1, out_channels)
    weight_mat = weight.reshape(out_channels, -1)
    patch_grad = workspace_buffer(workspace, "input_grad.patch_grad",
                                  (dy_mat.shape[0], weight_mat.shape[1]),
                                  xp.result_type(dy.dtype, weight.dtype), xp)
    xp.matmul(dy_mat, weight_mat, out=patch_grad)  # fully overwritten
    n, h, w = dy.shape[0], int(input_hw[0]), int(input_hw[1])
    return col2im(patch_grad, (n, h, w, in_channels), (kh, kw), stride, padding)


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
    ``input_grad_method`` (``"auto"``, ``"convolution"`` or ``"col2im"``) picks how backward
    computes dx (see :func:`conv2d_input_grad`); all give the same result.

    Scratch memory (the padded input, the patch matrix, the dilated gradient and its patches)
    is kept between steps and reused while the input shape stays the same; ``model.to()`` and
    ``astype()`` drop it. The patch matrix is also what backward needs for dW.
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
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Conv2d: {name} must be an int >= 1, got {value!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = as_pair(kernel_size, "kernel_size", "Conv2d", 1)
        self.stride = as_pair(stride, "stride", "Conv2d", 1)
        self.padding = as_pair(padding, "padding", "Conv2d", 0)
        kh, kw = self.kernel_size
        shape = (out_channels, kh, kw, in_channels)
        w = kaiming_normal(shape, fan_in=in_channels * kh * kw, rng=rng, dtype=dtype)
        self.weight = Parameter(w, "weight", regularize=True)
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype), "bias") if bias else None
        self.input_hw: tuple[int, int] | None = None
        self.input_grad_method = "auto"
        self._workspace: dict = {}

    def forward(self, x: Any) -> Any:
        """x (N, H, W, in) -> y (N, H', W', out): one im2col copy, then one ``@`` (BLAS)."""
        check_input(self, x, ndim=4, layout="(N, H, W, C)", last_dim=self.in_channels)
        n, h, w, _ = x.shape
        ho, wo = conv_output_hw((h, w), self.kernel_size, self.stride, self.padding,
                                owner=self.label)
        patches = _patches(x, self.kernel_size, self.stride, self.padding, self._workspace,
                           "forward", self.label)
        y = patches @ self.weight.data.reshape(self.out_channels, -1).T
        if self.bias is not None:
            y += self.bias.data
        self.input_hw = (h, w)
        self._cache = (patches, (h, w), (n, ho, wo, self.out_channels))
        return y.reshape(n, ho, wo, self.out_channels)

    def backward(self, dy: Any) -> Any:
        """dy (N, H', W', out) -> dx (N, H, W, in); sets ``weight.grad`` and ``bias.grad``.

        The layer is a Linear map of each patch row, so with dy_mat = dy.reshape(-1, out):
        ``dW = (dy_matᵀ @ patches).reshape(weight.shape)``, ``db = 1ᵀ dy_mat`` (column sums
        as one matrix-vector product) and dx = the adjoint convolution applied to dy, computed
        by :func:`conv2d_input_grad` with ``method=self.input_grad_method``.
        """
        patches, input_hw, out_shape = self._require_cache()
        check_grad(self, dy, out_shape)
        xp = get_array_module(dy)
        dy_mat = dy.reshape(-1, self.out_channels)
        self.weight.grad = (dy_mat.T @ patches).reshape(self.weight.data.shape)
        if self.bias is not None:
            self.bias.grad = xp.ones(dy_mat.shape[0], dtype=dy.dtype) @ dy_mat
        return conv2d_input_grad(dy, self.weight.data, input_hw, self.stride, self.padding,
                                 method=self.input_grad_method, workspace=self._workspace)

    def _reset_workspace(self) -> None:
        self._workspace = {}

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
        )
