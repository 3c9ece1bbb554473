"""2-D convolution, channels-last, as im2col followed by a matrix multiply.

A convolution is a Linear layer applied to every patch (see :mod:`specnorm_np.ops.im2col`)::

    patches = im2col(x)                          (N·H'·W', kh·kw·in)
    y       = patches @ W_mat.T + b              (N·H'·W', out),  W_mat = weight.reshape(out, -1)

so its backward pass is Linear's, applied to the patch matrix:

    dW_mat = dy_matᵀ @ patches      db = Σ_rows dy_mat      dpatches = dy_mat @ W_mat
    dx     = col2im(dpatches)                                   (the reference route)

For stride 1 and out ≤ 4·in channels, dx is computed by an equivalent but faster route, a
second convolution of dy with the flipped kernel (:func:`_input_grad_by_convolution`);
otherwise col2im is cheaper (:func:`conv2d_input_grad` explains the choice). The tests check
that both routes agree.

Speed and memory: every product above is computed over chunks of the batch (``CHUNK_BYTES`` of
patches at a time): one explicit im2col copy of the chunk, then one ``@`` (BLAS) whose result
goes straight into its rows of y (or is added into dW). The chunk's patches are still in the
CPU cache when the multiply reads them, and the full (N·H'·W', kh·kw·in) patch matrix, nine
times the input for 3×3 kernels, never exists: forward keeps only a reference to x, and
backward recomputes each chunk's patches for dW. Measured single-threaded at batch 128, a
32→32 3×3 conv at 32×32 took 47 ms as one im2col + one multiply and 33 ms in 8-image chunks.
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


CHUNK_BYTES = 8 * 2**20
"""Largest scratch array (a chunk's patch matrix) of the chunked products, in bytes."""


def _check_rank(owner: str, x: Any, weight: Any, x_name: str = "x") -> None:
    """``x`` (N, H, W, C) and ``weight`` (out, kh, kw, C) must both be 4-D."""
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(
            f"{owner}: expected {x_name} (N, H, W, C) and weight (out, kh, kw, in), both 4-D; "
            f"got shapes {tuple(x.shape)} and {tuple(weight.shape)}"
        )


def _batch_chunks(n: int, bytes_per_image: int) -> tuple[int, list[tuple[int, int]]]:
    """(capacity, [(start, stop), ...]): batch slices of at most ``CHUNK_BYTES`` of scratch."""
    capacity = max(1, min(n, CHUNK_BYTES // max(1, bytes_per_image)))
    return capacity, [(start, min(n, start + capacity)) for start in range(0, n, capacity)]


def _patches(x: Any, kernel_hw: tuple[int, int], stride: tuple[int, int],
             padding: tuple[int, int], workspace: dict | None, prefix: str,
             capacity: int) -> Any:
    """im2col of the chunk ``x`` (m ≤ capacity images) into reusable workspace buffers.

    The buffers ``prefix.patches`` / ``prefix.padded`` hold ``capacity`` images; the first m are
    used, so a short last chunk needs no new allocation.
    """
    if workspace is None or (kernel_hw, stride, padding) == ((1, 1), (1, 1), (0, 0)):
        return im2col(x, kernel_hw, stride, padding)  # (1×1 kernels: a view of x, no copy)
    xp = get_array_module(x)
    m, h, w, c = x.shape
    (kh, kw), (ph, pw) = kernel_hw, padding
    ho, wo = conv_output_hw((h, w), kernel_hw, stride, padding)
    out = workspace_buffer(workspace, prefix + ".patches", (capacity, ho, wo, kh, kw, c),
                           x.dtype, xp)[:m]
    padded = None
    if ph or pw:
        padded = workspace_buffer(workspace, prefix + ".padded",
                                  (capacity, h + 2 * ph, w + 2 * pw, c), x.dtype, xp)[:m]
    return im2col(x, kernel_hw, stride, padding, out=out, padded_out=padded)


def conv2d(x: Any, weight: Any, stride: Any = 1, padding: Any = 0, *,
           workspace: dict | None = None) -> Any:
    """Convolution without bias: x (N, H, W, in), weight (out, kh, kw, in) -> y (N, H', W', out).

    Zero padding, any stride. ``workspace`` (a dict) lets repeated calls reuse scratch memory.
    Per batch chunk: ``y_rows = im2col(x_chunk) @ W_mat.T``, written straight into y.
    """
    _check_rank("conv2d", x, weight)
    xp = get_array_module(x, weight)
    out_channels, kh, kw, in_channels = weight.shape
    if x.shape[-1] != in_channels:
        raise ValueError(f"conv2d: x has {x.shape[-1]} channels, weight expects {in_channels}")
    n, h, w, _ = x.shape
    stride = as_pair(stride, "stride", "conv2d", 1)
    padding = as_pair(padding, "padding", "conv2d", 0)
    ho, wo = conv_output_hw((h, w), (kh, kw), stride, padding, owner="conv2d")
    y = xp.empty((n, ho, wo, out_channels), dtype=xp.result_type(x.dtype, weight.dtype))
    y_mat, rows = y.reshape(n * ho * wo, out_channels), ho * wo
    weight_mat_t = weight.reshape(out_channels, -1).T  # (kh·kw·in, out), a view
    capacity, chunks = _batch_chunks(n, rows * kh * kw * in_channels * x.itemsize)
    for start, stop in chunks:
        patches = _patches(x[start:stop], (kh, kw), stride, padding, workspace, "patches",
                           capacity)
        xp.matmul(patches, weight_mat_t, out=y_mat[start * rows : stop * rows])
    return y


def conv2d_weight_grad(x: Any, dy: Any, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                       *, workspace: dict | None = None) -> Any:
    """dL/dW of :func:`conv2d`: x (N, H, W, in), dy (N, H', W', out) -> dW (out, kh, kw, in).

    From y_mat = patches @ W_matᵀ:  dW_mat = dy_matᵀ @ patches = Σ over batch chunks of
    dy_chunkᵀ @ im2col(x_chunk) (the patches are recomputed chunk by chunk, not stored).
    """
    owner = "conv2d_weight_grad"
    _check_rank(owner, x, dy, x_name="x")
    kh, kw = as_pair(kernel_size, "kernel_size", owner, 1)
    stride = as_pair(stride, "stride", owner, 1)
    padding = as_pair(padding, "padding", owner, 0)
    n, h, w, in_channels = x.shape
    ho, wo = conv_output_hw((h, w), (kh, kw), stride, padding, owner=owner)
    if tuple(dy.shape[:3]) != (n, ho, wo):
        raise ValueError(
            f"{owner}: expected dy of shape ({n}, {ho}, {wo}, out), got {tuple(dy.shape)}"
        )
    out_channels, rows = dy.shape[-1], ho * wo
    dy_mat = dy.reshape(n * rows, out_channels)
    capacity, chunks = _batch_chunks(n, rows * kh * kw * in_channels * x.itemsize)
    weight_mat = None
    for start, stop in chunks:
        patches = _patches(x[start:stop], (kh, kw), stride, padding, workspace, "patches",
                           capacity)
        part = dy_mat[start * rows : stop * rows].T @ patches  # (out, kh·kw·in)
        if weight_mat is None:
            weight_mat = part
        else:
            weight_mat += part
    return weight_mat.reshape(out_channels, kh, kw, in_channels)


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
        ``"col2im"``: ``col2im(dy_mat @ W_mat)`` as in :func:`conv2d_input_grad_col2im`.
        ``"auto"`` takes the convolution when stride is 1 and out ≤ 4·in, else col2im (see
        Notes). All give the same dx.
    workspace : dict or None
        Scratch buffers reused between calls.

    Returns
    -------
    dx : ndarray (N, H, W, in)

    Notes
    -----
    Per input pixel, the convolution route copies and multiplies kh·kw·out numbers per stride
    step (the dilated dy has sh·sw times more rows than dy, mostly zeros); col2im writes and
    scatter-adds kh·kw·in numbers. Measured single-threaded at batch 128 (3×3 kernels,
    padding 1, this project's machine), convolution vs col2im: 32→32 channels at 32×32,
    33 ms vs 43 ms; 64→64 at 16×16, 24 vs 30; 64→32, 14 vs 20; 16→64, 9.7 vs 10.5; but
    3→32 (a first layer), 18.6 vs 17.2, and stride 2 (32→64 at 32×32), 55 vs 19.

    Both routes run over chunks of the batch (``CHUNK_BYTES`` of scratch at a time), writing
    each chunk's matrix product straight into dx.
    """
    owner = "conv2d_input_grad"
    _check_input_grad_shapes(owner, dy, weight, input_hw, stride, padding)
    if method not in ("auto", "convolution", "col2im"):
        raise ValueError(f"{owner}: method must be 'auto', 'convolution' or 'col2im', "
                         f"got {method!r}")
    xp = get_array_module(dy, weight)
    out_channels, kh, kw, in_channels = weight.shape
    if method == "auto":
        stride_one = as_pair(stride, "stride", owner, 1) == (1, 1)
        method = "convolution" if stride_one and out_channels <= 4 * in_channels else "col2im"
    n, h, w = dy.shape[0], int(input_hw[0]), int(input_hw[1])
    dx = xp.empty((n, h, w, in_channels), dtype=xp.result_type(dy.dtype, weight.dtype))
    if method == "convolution":
        route, per_image = _input_grad_by_convolution, h * w * kh * kw * out_channels
    else:
        ho, wo = dy.shape[1:3]
        route, per_image = _input_grad_by_col2im, max(ho * wo * kh * kw, h * w) * in_channels
    capacity, chunks = _batch_chunks(n, per_image * dx.itemsize)
    for start, stop in chunks:
        route(dy[start:stop], weight, (h, w), stride, padding, dx[start:stop], workspace,
              capacity)
    return dx


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
                               padding: Any, out: Any, workspace: dict | None,
                               capacity: int) -> None:
    """Fill ``out`` (m, H, W, in) with dx of ``dy`` (m, H', W', out), by a convolution.

    dx is a stride-1 convolution of the dilated, padded dy with the flipped kernel. The trick
    (the reference is :func:`conv2d_input_grad_col2im`): forward reads
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
    followed by kh·kw scatter-adds (col2im). Scratch buffers hold ``capacity`` images; the
    first m are used.
    """
    xp = get_array_module(dy, weight)
    out_channels, kh, kw, in_channels = weight.shape
    m, ho, wo, _ = dy.shape
    sh, sw = as_pair(stride, "stride", "conv2d_input_grad", 1)
    ph, pw = as_pair(padding, "padding", "conv2d_input_grad", 0)
    h, w = input_hw
    top, left = kh - 1 - ph, kw - 1 - pw  # where dy[0, 0] lands in the buffer (may be < 0)
    dilated = workspace_buffer(workspace, "input_grad.dilated", (capacity, h + kh - 1,
                               w + kw - 1, out_channels), dy.dtype, xp,
                               tag=(kh, kw, sh, sw, ph, pw, ho, wo))[:m]
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
    patches = _patches(dilated, (kh, kw), (1, 1), (0, 0), workspace, "input_grad", capacity)
    xp.matmul(patches, flipped, out=out.reshape(m * h * w, in_channels))


def _input_grad_by_col2im(dy: Any, weight: Any, input_hw: tuple[int, int], stride: Any,
                          padding: Any, out: Any, workspace: dict | None, capacity: int) -> None:
    """Fill ``out`` (m, H, W, in) with ``col2im(dy_mat @ W_mat)``, using reusable scratch."""
    xp = get_array_module(dy, weight)
    out_channels, kh, kw, in_channels = weight.shape
    m, ho, wo, _ = dy.shape
    rows = ho * wo  # patch rows per image
    patch_grad = workspace_buffer(workspace, "input_grad.patch_grad",
                                  (capacity * rows, kh * kw * in_channels), out.dtype, xp)
    patch_grad = patch_grad[: m * rows]
    xp.matmul(dy.reshape(m * rows, out_channels), weight.reshape(out_channels, -1),
              out=patch_grad)  # fully overwritten
    out[...] = col2im(patch_grad, (m, *input_hw, in_channels), (kh, kw), stride, padding)


def conv2d_input_grad_col2im(dy: Any, weight: Any, input_hw: tuple[int, int], stride: Any = 1,
                             padding: Any = 0) -> Any:
    """dL/dx the textbook way: ``col2im(dy_mat @ W_mat)``; the reference for the fast route.

    dy (N, H', W', out), weight (out, kh, kw, in) -> dx (N, H, W, in). From
    ``y_mat = patches @ W_matᵀ``: ``dpatches = dy_mat @ W_mat``, and col2im (the adjoint of
    im2col) adds each patch gradient back onto its window.
    """
    _check_input_grad_shapes("conv2d_input_grad_col2im", dy, weight, input_hw, stride, padding)
    out_channels, kh, kw, in_channels = weight.shape
    patch_grad = dy.reshape(-1, out_channels) @ weight.reshape(out_channels, -1)
    input_shape = (dy.shape[0], int(input_hw[0]), int(input_hw[1]), in_channels)
    return col2im(patch_grad, input_shape, (kh, kw), stride, padding)


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

    Forward keeps a reference to x (not its patch matrix). Chunk-sized scratch buffers (patches,
    padded input, dilated gradient) are kept between steps and reused while the input shape
    stays the same; ``model.to()`` and ``astype()`` drop them.
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
        """x (N, H, W, in) -> y (N, H', W', out): im2col then ``@`` per batch chunk, plus b."""
        check_input(self, x, ndim=4, layout="(N, H, W, C)", last_dim=self.in_channels,
                    dtype=self.weight.data.dtype)
        n, h, w, _ = x.shape
        conv_output_hw((h, w), self.kernel_size, self.stride, self.padding, owner=self.label)
        y = conv2d(x, self.weight.data, self.stride, self.padding, workspace=self._workspace)
        if self.bias is not None:
            y += self.bias.data
        self.input_hw = (h, w)
        self._cache = (x, tuple(y.shape))
        return y

    def backward(self, dy: Any) -> Any:
        """dy (N, H', W', out) -> dx (N, H, W, in); sets ``weight.grad`` and ``bias.grad``.

        The layer is a Linear map of each patch row, so with dy_mat = dy.reshape(-1, out):
        ``dW = (dy_matᵀ @ patches).reshape(weight.shape)`` (:func:`conv2d_weight_grad`),
        ``db = 1ᵀ dy_mat`` (column sums as one matrix-vector product) and dx = the adjoint
        convolution applied to dy (:func:`conv2d_input_grad`, ``method=input_grad_method``).
        """
        self.backward_weights(dy)
        x, _ = self._require_cache()
        return conv2d_input_grad(dy, self.weight.data, x.shape[1:3], self.stride, self.padding,
                                 method=self.input_grad_method, workspace=self._workspace)

    def backward_weights(self, dy: Any) -> None:
        """Set dL/dW and dL/db (see :meth:`backward`) without computing dL/dx."""
        x, out_shape = self._require_cache()
        check_grad(self, dy, out_shape)
        xp = get_array_module(dy)
        self.weight.grad = conv2d_weight_grad(x, dy, self.kernel_size, self.stride,
                                              self.padding, workspace=self._workspace)
        if self.bias is not None:
            dy_mat = dy.reshape(-1, self.out_channels)
            self.bias.grad = xp.ones(dy_mat.shape[0], dtype=dy.dtype) @ dy_mat

    def _reset_workspace(self) -> None:
        self._workspace = {}

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
        )
