"""im2col / col2im: a convolution is a Linear layer applied to every patch.

Channels-last layout: activations ``x`` are (N, H, W, C) and a kernel is (out, kh, kw, C).
Output position (p, q) of a convolution reads the window
``x_padded[n, p·sh : p·sh + kh, q·sw : q·sw + kw, :]`` of kh·kw·C numbers. ``im2col`` copies
every window into one row of a patch matrix, flattened in (kh, kw, C) order — the same order
as a row of the kernel's matrix view ``W_mat = weight.reshape(out, -1)`` (the paper's
out × (in·kh·kw) matrix)::

    x (N, H, W, C)  --im2col-->  patches (N·H'·W', kh·kw·C)
                                     row = one window, flattened as (kh, kw, C)

    y_mat = patches @ W_mat.T        (N·H'·W', out)   <- a Linear layer, one row per patch
    y     = y_mat.reshape(N, H', W', out)

    with H' = (H + 2·ph - kh) // sh + 1  and  W' = (W + 2·pw - kw) // sw + 1.

``col2im`` is the adjoint (transpose) of ``im2col``: it scatters rows back onto the image and
*sums* where windows overlap, so ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩. Through it, the gradient of a
convolution with respect to x is ``col2im(dy_mat @ W_mat)``.

Both are loops over the kh·kw kernel offsets (i, j): for a fixed offset, the entries that
offset reads form one strided slice of the padded image,
``x_padded[:, i : i + sh·(H'-1) + 1 : sh, j : j + sw·(W'-1) + 1 : sw, :]``, copied in one go
(channels-last keeps the inner run of C numbers contiguous). ``conv2d_naive`` is the obviously
correct loop over output positions that the tests use as the oracle.

Every function takes its array module from its inputs (``get_array_module``), so the same code
runs on NumPy, CuPy and the strict test backend.
"""

from __future__ import annotations

from typing import Any

from specnorm_np._validation import as_pair
from specnorm_np.backend import get_array_module

__all__ = [
    "as_pair",
    "conv_output_hw",
    "pad_spatial",
    "im2col",
    "col2im",
    "conv2d_naive",
]


def conv_output_hw(
    input_hw: tuple[int, int],
    kernel_size: Any,
    stride: Any = 1,
    padding: Any = 0,
    owner: str = "conv",
) -> tuple[int, int]:
    """Output (H', W') of a window sweep; ``ValueError`` if the kernel exceeds the padded input.

    ``H' = (H + 2·ph - kh) // sh + 1`` (rows that no window reaches at the bottom are dropped,
    as in PyTorch), likewise for W'.
    """
    (kh, kw) = as_pair(kernel_size, "kernel_size", owner, 1)
    (sh, sw) = as_pair(stride, "stride", owner, 1)
    (ph, pw) = as_pair(padding, "padding", owner, 0)
    h, w = int(input_hw[0]), int(input_hw[1])
    if kh > h + 2 * ph or kw > w + 2 * pw:
        raise ValueError(
            f"{owner}: kernel {kh}x{kw} is larger than the padded input "
            f"{h + 2 * ph}x{w + 2 * pw} (input {h}x{w} with padding ({ph}, {pw}) on each side)"
        )
    return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def pad_spatial(x: Any, padding: tuple[int, int]) -> Any:
    """Zero-pad the H and W axes of ``x`` (N, H, W, C) -> (N, H + 2·ph, W + 2·pw, C).

    No copy when padding is 0.
    """
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    n, h, w, c = x.shape
    out = get_array_module(x).zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype)
    out[:, ph : ph + h, pw : pw + w, :] = x
    return out


def im2col(
    x: Any, kernel_size: Any, stride: Any = 1, padding: Any = 0, *, out: Any = None,
) -> Any:
    """Copy every kh×kw window of ``x`` into one row of a patch matrix.

    Parameters
    ----------
    x : ndarray (N, H, W, C)
    kernel_size, stride, padding : int or (int, int)
    out : ndarray (N, H', W', kh, kw, C) or None
        Optional reusable output buffer of x's dtype; entirely overwritten.

    Returns
    -------
    patches : ndarray (N·H'·W', kh·kw·C)
        Row ``(n·H' + p)·W' + q`` is the window of output position (n, p, q), in (kh, kw, C)
        order, so ``patches @ weight.reshape(out, -1).T`` is the convolution. For a 1×1
        kernel with stride 1 and no padding this is a view of ``x`` (no copy).
    """
    xp = get_array_module(x)
    n, h, w, c = x.shape
    kh, kw = as_pair(kernel_size, "kernel_size", "im2col", 1)
    sh, sw = as_pair(stride, "stride", "im2col", 1)
    ph, pw = as_pair(padding, "padding", "im2col", 0)
    ho, wo = conv_output_hw((h, w), (kh, kw), (sh, sw), (ph, pw), owner="im2col")
    if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
        return x.reshape(n * h * w, c)
    source = pad_spatial(x, (ph, pw))
    if out is None:
        out = xp.empty((n, ho, wo, kh, kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            # entries read by kernel offset (i, j) for all output positions: one strided slice
            out[:, :, :, i, j, :] = source[
                :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :
            ]
    return out.reshape(n * ho * wo, kh * kw * c)


def col2im(
    cols: Any, input_shape: tuple[int, int, int, int], kernel_size: Any, stride: Any = 1,
    padding: Any = 0,
) -> Any:
    """Adjoint of :func:`im2col`: add every patch row back onto its window of the image.

    Parameters
    ----------
    cols : ndarray (N·H'·W', kh·kw·C)
    input_shape : (N, H, W, C), the shape of the ``x`` given to ``im2col``.

    Returns
    -------
    x : ndarray (N, H, W, C)
        ``x[n, a, b, c] = Σ`` of the ``cols`` entries that ``im2col`` copied from (n, a, b, c).

    Notes
    -----
    Why ``+=``: with overlapping windows (stride < kernel) one pixel is copied into several
    patches, so the adjoint must sum all their contributions. Within one offset (i, j) the
    strided slice hits each pixel at most once, so a plain vectorised ``+=`` is exact (no
    ``np.add.at`` needed, which exists for repeated fancy indices); contributions of different
    offsets to the same pixel are summed by the loop. Padding rows receive gradient too and are
    cut off at the end, since padding is a constant, not an input.
    """
    xp = get_array_module(cols)
    n, h, w, c = (int(s) for s in input_shape)
    kh, kw = as_pair(kernel_size, "kernel_size", "col2im", 1)
    sh, sw = as_pair(stride, "stride", "col2im", 1)
    ph, pw = as_pair(padding, "padding", "col2im", 0)
    ho, wo = conv_output_hw((h, w), (kh, kw), (sh, sw), (ph, pw), owner="col2im")
    if tuple(cols.shape) != (n * ho * wo, kh * kw * c):
        raise ValueError(
            f"col2im: expected cols of shape {(n * ho * wo, kh * kw * c)} for input {input_shape}, "
            f"got {tuple(cols.shape)}"
        )
    windows = cols.reshape(n, ho, wo, kh, kw, c)
    padded = xp.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            padded[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :] += (
                windows[:, :, :, i, j, :]
            )
    if ph == 0 and pw == 0:
        return padded
    return padded[:, ph : ph + h, pw : pw + w, :].copy()


def conv2d_naive(
    x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0
) -> Any:
    """Reference convolution by plain loops over output positions and channels (test oracle).

    ``y[n, p, q, o] = Σ_{i, j, c} x_pad[n, p·sh + i, q·sw + j, c] · weight[o, i, j, c] + b[o]``

    Parameters
    ----------
    x : ndarray (N, H, W, C);  weight : ndarray (out, kh, kw, C);  bias : ndarray (out,) or None

    Returns
    -------
    y : ndarray (N, H', W', out)
    """
    xp = get_array_module(x, weight, bias)
    n, h, w, c = x.shape
    out_channels, kh, kw, _ = weight.shape
    sh, sw = as_pair(stride, "stride", "conv2d_naive", 1)
    ph, pw = as_pair(padding, "padding", "conv2d_naive", 0)
    ho, wo = conv_output_hw((h, w), (kh, kw), (sh, sw), (ph, pw), owner="conv2d_naive")
    dtype = xp.result_type(x.dtype, weight.dtype)
    x_pad = xp.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=dtype)
    x_pad[:, ph : ph + h, pw : pw + w, :] = x
    y = xp.zeros((n, ho, wo, out_channels), dtype=dtype)
    for p in range(ho):
        for q in range(wo):
            window = x_pad[:, p * sh : p * sh + kh, q * sw : q * sw + kw, :]  # (N, kh, kw, C)
            for o in range(out_channels):
                y[:, p, q, o] = (window * weight[o]).sum(axis=(1, 2, 3))
    if bias is not None:
        y += bias
    return y
