"""The three products of a convolution: the plain reference route and the fast route beside it.

Channels-last: x (N, H, W, in), weight (out, kh, kw, in), y (N, H', W', out). With the patch
matrix ``P = im2col(x)`` (N·H'·W', kh·kw·in), the kernel's matrix view
``W = weight.reshape(out, -1)`` and ``dY = dy.reshape(-1, out)``, a convolution is a Linear
layer applied to every patch, and its gradients are Linear's::

    y  = P Wᵀ              conv2d_reference               (forward)
    dW = dYᵀ P             conv2d_weight_grad_reference   (weight gradient)
    dx = col2im(dY W)      conv2d_input_grad_reference    (input gradient: col2im, the adjoint
                                                          of im2col, adds each patch's gradient
                                                          back onto its window)

The reference functions are these lines and nothing else. The fast functions (:func:`conv2d`,
:func:`conv2d_weight_grad`, :func:`conv2d_input_grad`) compute the same numbers in three ways
that save time and memory, and the tests check that both routes agree:

1. *Batch chunks.* Every product runs over chunks of the batch, ``CHUNK_BYTES`` of patches at a
   time: one im2col copy of the chunk, then one ``@`` (BLAS) whose result goes straight into its
   rows of the output (or is added into dW). The chunk's patches are still in the CPU cache when
   the multiply reads them, and the full patch matrix (nine times the input for 3×3 kernels)
   never exists.
2. *Reused scratch.* Chunk-sized buffers come from a :class:`~specnorm_np.ops.workspace.Workspace`
   kept by the layer, so a training step allocates no big array.
3. *The flipped-kernel route for dx* (:func:`_input_grad_by_convolution`): for stride 1, dx is a
   second convolution of dy with the spatially flipped kernel, one im2col and one multiply
   instead of a multiply followed by kh·kw scatter-adds. ``conv2d_input_grad(method="auto")``
   takes it when stride is 1 and out ≤ 4·in; otherwise (strides, where the dilated dy is mostly
   zeros, and first layers with few input channels) the chunked col2im is cheaper.
"""

from __future__ import annotations

from typing import Any

from specnorm_np._validation import as_pair, check_choice
from specnorm_np.backend import get_array_module
from specnorm_np.ops.im2col import col2im, conv_output_hw, im2col
from specnorm_np.ops.workspace import Workspace

__all__ = [
    "CHUNK_BYTES",
    "conv2d_reference",
    "conv2d_weight_grad_reference",
    "conv2d_input_grad_reference",
    "conv2d",
    "conv2d_weight_grad",
    "conv2d_input_grad",
]


CHUNK_BYTES = 8 * 2**20
"""Largest scratch array (a chunk's patch matrix) of the chunked products, in bytes."""

INPUT_GRAD_METHODS = ("auto", "convolution", "col2im")


# ---- shape checks ---------------------------------------------------------------------------
def _check_rank(owner: str, x: Any, weight: Any, x_name: str = "x") -> None:
    """``x`` (N, H, W, C) and ``weight`` (out, kh, kw, C) must both be 4-D."""
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(
            f"{owner}: expected {x_name} (N, H, W, C) and weight (out, kh, kw, in), both 4-D; "
            f"got shapes {tuple(x.shape)} and {tuple(weight.shape)}"
        )


def _forward_geometry(owner: str, x: Any, weight: Any, stride: Any,
                      padding: Any) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(stride, padding, (H', W')) after checking x against weight."""
    _check_rank(owner, x, weight)
    if x.shape[-1] != weight.shape[-1]:
        raise ValueError(
            f"{owner}: x has {x.shape[-1]} channels, weight expects {weight.shape[-1]}"
        )
    stride = as_pair(stride, "stride", owner, 1)
    padding = as_pair(padding, "padding", owner, 0)
    output_hw = conv_output_hw(x.shape[1:3], weight.shape[1:3], stride, padding, owner=owner)
    return stride, padding, output_hw


def _weight_grad_geometry(owner: str, x: Any, dy: Any, kernel_size: Any, stride: Any,
                          padding: Any) -> tuple[tuple[int, int], ...]:
    """(kernel_size, stride, padding) after checking dy against a convolution of x."""
    _check_rank(owner, x, dy, x_name="x")
    kernel_size = as_pair(kernel_size, "kernel_size", owner, 1)
    stride = as_pair(stride, "stride", owner, 1)
    padding = as_pair(padding, "padding", owner, 0)
    n = x.shape[0]
    ho, wo = conv_output_hw(x.shape[1:3], kernel_size, stride, padding, owner=owner)
    if tuple(dy.shape[:3]) != (n, ho, wo):
        raise ValueError(
            f"{owner}: expected dy of shape ({n}, {ho}, {wo}, out), got {tuple(dy.shape)}"
        )
    return kernel_size, stride, padding


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


# ---- the reference route: the three formulas ------------------------------------------------
def conv2d_reference(x: Any, weight: Any, stride: Any = 1, padding: Any = 0) -> Any:
    """y = im2col(x) @ W_matᵀ: x (N, H, W, in), weight (out, kh, kw, in) -> y (N, H', W', out)."""
    stride, padding, (ho, wo) = _forward_geometry("conv2d_reference", x, weight, stride, padding)
    out_channels = weight.shape[0]
    patches = im2col(x, weight.shape[1:3], stride, padding)  # (N·H'·W', kh·kw·in)
    y_mat = patches @ weight.reshape(out_channels, -1).T  # (N·H'·W', out)
    return y_mat.reshape(x.shape[0], ho, wo, out_channels)


def conv2d_weight_grad_reference(x: Any, dy: Any, kernel_size: Any, stride: Any = 1,
                                 padding: Any = 0) -> Any:
    """dW = dy_matᵀ @ im2col(x): x (N, H, W, in), dy (N, H', W', out) -> (out, kh, kw, in)."""
    kernel_size, stride, padding = _weight_grad_geometry(
        "conv2d_weight_grad_reference", x, dy, kernel_size, stride, padding)
    out_channels = dy.shape[-1]
    patches = im2col(x, kernel_size, stride, padding)
    weight_mat = dy.reshape(-1, out_channels).T @ patches  # (out, kh·kw·in)
    return weight_mat.reshape(out_channels, *kernel_size, x.shape[-1])


def conv2d_input_grad_reference(dy: Any, weight: Any, input_hw: tuple[int, int],
                                stride: Any = 1, padding: Any = 0) -> Any:
    """dx = col2im(dy_mat @ W_mat): dy (N, H', W', out), weight (out, kh, kw, in) -> dx
    (N, H, W, in). From y_mat = patches @ W_matᵀ: dpatches = dy_mat @ W_mat, and col2im (the
    adjoint of im2col) adds each patch gradient back onto its window."""
    _check_input_grad_shapes("conv2d_input_grad_reference", dy, weight, input_hw, stride,
                             padding)
    out_channels, kh, kw, in_channels = weight.shape
    patch_grad = dy.reshape(-1, out_channels) @ weight.reshape(out_channels, -1)
    input_shape = (dy.shape[0], int(input_hw[0]), int(input_hw[1]), in_channels)
    return col2im(patch_grad, input_shape, (kh, kw), stride, padding)


# ---- the fast route ---------------------------------------------------------------------------
def _batch_chunks(n: int, bytes_per_image: int) -> tuple[int, list[tuple[int, int]]]:
    """(capacity, [(start, stop), ...]): batch slices of at most ``CHUNK_BYTES`` of scratch."""
    capacity = max(1, min(n, CHUNK_BYTES // max(1, bytes_per_image)))
    return capacity, [(start, min(n, start + capacity)) for start in range(0, n, capacity)]


def _patches(x: Any, kernel_hw: tuple[int, int], stride: tuple[int, int],
             padding: tuple[int, int], workspace: Workspace, name: str, capacity: int) -> Any:
    """im2col of the chunk ``x`` (m ≤ capacity images) into workspace buffers for ``capacity``.

    The zero-padded chunk is a ``zeros_with`` buffer (its border stays zero), the patch matrix
    an ``empty`` one that im2col overwrites entirely. 1×1 kernels need no copy at all.
    """
    if (kernel_hw, stride, padding) == ((1, 1), (1, 1), (0, 0)):
        return im2col(x, kernel_hw, stride, padding)  # a view of x
    m, h, w, c = x.shape
    (kh, kw), (ph, pw) = kernel_hw, padding
    ho, wo = conv_output_hw((h, w), kernel_hw, stride, padding)
    source = x
    if ph or pw:
        interior = (slice(ph, ph + h), slice(pw, pw + w), slice(None))
        source = workspace.zeros_with(name + ".padded", (capacity, h + 2 * ph, w + 2 * pw, c),
                                      interior, x)
    out = workspace.empty(name + ".patches", (capacity, ho, wo, kh, kw, c), x.dtype, x)[:m]
    return im2col(source, kernel_hw, stride, 0, out=out)


def conv2d(x: Any, weight: Any, stride: Any = 1, padding: Any = 0, *,
           workspace: Workspace | None = None) -> Any:
    """:func:`conv2d_reference` by batch chunks: x (N, H, W, in), weight (out, kh, kw, in) ->
    y (N, H', W', out); per chunk ``y_rows = im2col(x_chunk) @ W_matᵀ``, written into y.

    ``workspace`` lets repeated calls reuse scratch memory (a fresh one by default).
    """
    stride, padding, (ho, wo) = _forward_geometry("conv2d", x, weight, stride, padding)
    workspace = Workspace() if workspace is None else workspace
    xp = get_array_module(x, weight)
    out_channels, kh, kw, in_channels = weight.shape
    n = x.shape[0]
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
                       *, workspace: Workspace | None = None) -> Any:
    """:func:`conv2d_weight_grad_reference` by batch chunks: x (N, H, W, in), dy (N, H', W',
    out) -> dW (out, kh, kw, in) = Σ over chunks of dy_chunkᵀ @ im2col(x_chunk) (the patches
    are rebuilt chunk by chunk, not kept from forward). An empty batch gives dW = 0.
    """
    (kh, kw), stride, padding = _weight_grad_geometry("conv2d_weight_grad", x, dy, kernel_size,
                                                      stride, padding)
    workspace = Workspace() if workspace is None else workspace
    xp = get_array_module(x, dy)
    n, _, _, in_channels = x.shape
    out_channels, rows = dy.shape[-1], dy.shape[1] * dy.shape[2]
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
    if weight_mat is None:  # N = 0: no chunk, an empty sum
        weight_mat = xp.zeros((out_channels, kh * kw * in_channels),
                              dtype=xp.result_type(x.dtype, dy.dtype))
    return weight_mat.reshape(out_channels, kh, kw, in_channels)


def conv2d_input_grad(dy: Any, weight: Any, input_hw: tuple[int, int], stride: Any = 1,
                      padding: Any = 0, *, method: str = "auto",
                      workspace: Workspace | None = None) -> Any:
    """:func:`conv2d_input_grad_reference` by batch chunks: dy (N, H', W', out), weight
    (out, kh, kw, in) -> dx (N, H, W, in), the adjoint of the convolution applied to dy.

    Parameters
    ----------
    input_hw : (H, W) of the forward input.
    method : {"auto", "convolution", "col2im"}
        ``"convolution"``: the flipped-kernel convolution (:func:`_input_grad_by_convolution`).
        ``"col2im"``: ``col2im(dy_mat @ W_mat)`` per chunk. ``"auto"`` takes the convolution
        when stride is 1 and out ≤ 4·in, else col2im. All give the same dx.
    workspace : Workspace or None
        Scratch buffers reused between calls.

    Notes
    -----
    Per input pixel, the convolution route copies and multiplies kh·kw·out numbers per stride
    step (the dilated dy has sh·sw times more rows than dy, mostly zeros); col2im writes and
    scatter-adds kh·kw·in numbers. Hence the rule of ``"auto"``: the convolution wins for
    stride 1 unless out is much larger than in (a first layer with 3 input channels); col2im
    wins for strides > 1.
    """
    owner = "conv2d_input_grad"
    _check_input_grad_shapes(owner, dy, weight, input_hw, stride, padding)
    check_choice(method, "method", owner, INPUT_GRAD_METHODS)
    workspace = Workspace() if workspace is None else workspace
    stride = as_pair(stride, "stride", owner, 1)
    padding = as_pair(padding, "padding", owner, 0)
    xp = get_array_module(dy, weight)
    out_channels, kh, kw, in_channels = weight.shape
    if method == "auto":
        method = "convolution" if stride == (1, 1) and out_channels <= 4 * in_channels \
            else "col2im"
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


def _input_grad_by_convolution(dy: Any, weight: Any, input_hw: tuple[int, int],
                               stride: tuple[int, int], padding: tuple[int, int], out: Any,
                               workspace: Workspace, capacity: int) -> None:
    """Fill ``out`` (m, H, W, in) with dx of ``dy`` (m, H', W', out), by a convolution.

    dx is a stride-1 convolution of the dilated, padded dy with the flipped kernel. Forward
    reads ``y[p] = Σ_i x_pad[p·s + i] W[i]`` (one axis shown, channels summed over), hence
    pixel ``a`` of the padded input gets ``dx_pad[a] = Σ_{p, i : p·s + i = a} dy[p] W[i]``.

    1. *Dilate*: put ``dy[p]`` at row ``p·s`` of a zero array (s - 1 zeros between rows), so
       that ``dx_pad[a] = Σ_i dy_dil[a - i] W[i]`` — a full convolution with stride 1.
    2. *Flip*: with ``i' = k - 1 - i`` this is ``Σ_{i'} dy_dil[a - (k - 1) + i'] W[k - 1 - i']``,
       a plain correlation (what :func:`conv2d` computes) of ``dy_dil`` zero-padded by k - 1
       with the spatially flipped kernel, whose in and out channels swap roles
       (dy's channels are summed, x's channels come out).
    3. *Crop*: only rows ``a = ph ... ph + H - 1`` are real input, so the dilated gradient sits
       at offset ``k - 1 - ph`` in a (H + k - 1)-row buffer; entries falling outside it belong
       to windows lying wholly in the padding and contribute nothing.
    """
    xp = get_array_module(dy, weight)
    out_channels, kh, kw, in_channels = weight.shape
    m, ho, wo, _ = dy.shape
    (sh, sw), (ph, pw) = stride, padding
    h, w = input_hw
    top, left = kh - 1 - ph, kw - 1 - pw  # where dy[0, 0] lands in the buffer (may be < 0)
    # rows p with 0 <= p·sh + top <= h + kh - 2 fit in the buffer (others touch only padding)
    p_first, p_last = max(0, -(top // sh)), min(ho - 1, (h + kh - 2 - top) // sh)
    q_first, q_last = max(0, -(left // sw)), min(wo - 1, (w + kw - 2 - left) // sw)
    p_last, q_last = max(p_last, p_first - 1), max(q_last, q_first - 1)  # empty, not negative
    u, v = p_first * sh + top, q_first * sw + left
    region = (slice(u, u + sh * (p_last - p_first) + 1, sh) if p_last >= p_first else slice(0, 0),
              slice(v, v + sw * (q_last - q_first) + 1, sw) if q_last >= q_first else slice(0, 0),
              slice(None))
    dilated = workspace.zeros_with(
        "input_grad.dilated", (capacity, h + kh - 1, w + kw - 1, out_channels), region,
        dy[:, p_first : p_last + 1, q_first : q_last + 1, :])
    # flipped kernel as a (kh·kw·out, in) matrix, rows in im2col's (kh, kw, C=out) order
    flipped = weight[:, ::-1, ::-1, :].transpose(1, 2, 0, 3).reshape(kh * kw * out_channels,
                                                                     in_channels)
    patches = _patches(dilated, (kh, kw), (1, 1), (0, 0), workspace, "input_grad", capacity)
    xp.matmul(patches, flipped, out=out.reshape(m * h * w, in_channels))


def _input_grad_by_col2im(dy: Any, weight: Any, input_hw: tuple[int, int],
                          stride: tuple[int, int], padding: tuple[int, int], out: Any,
                          workspace: Workspace, capacity: int) -> None:
    """Fill ``out`` (m, H, W, in) with ``col2im(dy_mat @ W_mat)``, using reusable scratch."""
    xp = get_array_module(dy, weight)
    out_channels, kh, kw, in_channels = weight.shape
    m, ho, wo, _ = dy.shape
    rows = ho * wo  # patch rows per image
    patch_grad = workspace.empty("input_grad.patch_grad",
                                 (capacity * rows, kh * kw * in_channels), out.dtype, dy)
    patch_grad = patch_grad[: m * rows]
    xp.matmul(dy.reshape(m * rows, out_channels), weight.reshape(out_channels, -1),
              out=patch_grad)  # fully overwritten
    out[...] = col2im(patch_grad, (m, *input_hw, in_channels), (kh, kw), stride, padding)
