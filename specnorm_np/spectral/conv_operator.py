"""Operator norms and singular values of a convolution (beyond the paper).

The paper penalises σ of the reshaped kernel ``W_mat = kernel.reshape(out, -1)``. The
convolution itself is a linear map A from images (H, W, in) to images (H', W', out), and its
operator norm ‖A‖₂ is a different number. For stride 1, writing A = Σ_taps K_t S_t (K_t the
(out, in) matrix of tap t, S_t a shift that drops what leaves the image) gives
A x = W_mat·[S_1 x; …; S_T x], so ‖A‖ ≤ √(kh·kw)·σ(W_mat); with circular padding also
σ(W_mat) ≤ ‖A‖ (W_mat W_matᵀ = Σ_t K_t K_tᵀ is the mean over frequencies of K̂(f) K̂(f)ᴴ).

Four routes to the same numbers, each used to check the others in the tests:

* :func:`conv_operator_norm`: power iteration through :func:`~specnorm_np.ops.conv.conv2d` and
  its adjoint :func:`~specnorm_np.ops.conv.conv2d_input_grad`; zero padding, any stride, any
  size, any device.
* :func:`conv_singular_values_fft`: all singular values for circular padding and stride 1
  (Sedghi, Gupta & Long, "The Singular Values of Convolutional Layers", ICLR 2019).
* :func:`conv_as_dense_matrix`: the explicit matrix, built by convolving the basis images;
  small sizes only (the oracle).
* :func:`conv_as_linear_operator`: a SciPy ``LinearOperator`` for ``scipy.sparse.linalg.svds``.

Vectors of the input side have shape (1, H, W, in), of the output side (1, H', W', out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from specnorm_np._validation import check_int
from specnorm_np.backend import to_numpy
from specnorm_np.nn.conv import Conv2d
from specnorm_np.nn.module import Module
from specnorm_np.ops.conv import conv2d, conv2d_input_grad
from specnorm_np.ops.im2col import as_pair, conv_output_hw
from specnorm_np.spectral.power_iteration import normalized, random_unit_vector

if TYPE_CHECKING:  # SciPy is imported only where it is used (import specnorm_np stays light)
    import scipy.sparse.linalg

__all__ = [
    "conv_power_iteration",
    "conv_operator_norm",
    "conv_singular_values_fft",
    "conv_as_dense_matrix",
    "conv_as_linear_operator",
    "layer_spectra",
]


def _check_kernel(kernel: Any, owner: str) -> None:
    if getattr(kernel, "ndim", 0) != 4:
        raise ValueError(
            f"{owner}: expected a conv kernel (out, kh, kw, in) or a Conv2d layer, got "
            f"{type(kernel).__name__} of shape {tuple(getattr(kernel, 'shape', ()))}"
        )


def _geometry(layer_or_kernel: Any, input_hw: Any, stride: Any, padding: Any,
              owner: str) -> tuple[Any, tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(kernel, input_hw, stride, padding) from a Conv2d layer or a bare kernel."""
    if isinstance(layer_or_kernel, Conv2d):
        layer = layer_or_kernel
        kernel, stride, padding = layer.weight.data, layer.stride, layer.padding
        input_hw = layer.input_hw if input_hw is None else input_hw
        if input_hw is None:
            raise ValueError(f"{owner}: {layer.label} has no input size yet; run a forward pass "
                             "or pass input_hw=(H, W)")
    else:
        kernel = layer_or_kernel
        _check_kernel(kernel, owner)
        if input_hw is None:
            raise ValueError(f"{owner}: input_hw=(H, W) is required for a bare kernel")
    hw = as_pair(tuple(int(s) for s in input_hw), "input_hw", owner, 1)
    return (kernel, hw, as_pair(stride, "stride", owner, 1),
            as_pair(padding, "padding", owner, 0))


def conv_power_iteration(
    kernel: Any, v: Any, input_hw: Any, stride: Any = 1, padding: Any = 0, iterations: int = 1
) -> tuple[Any, Any, Any]:
    """Normalized power iteration for the top singular triplet of the convolution A.

    One step: u = A v/‖A v‖ (``conv2d``), v = Aᵀu/‖Aᵀu‖ (``conv2d_input_grad``, the adjoint),
    σ = ⟨u, A v⟩ = ‖Aᵀu‖. ``iterations=0`` only evaluates u = Av/‖Av‖, σ = ‖Av‖ for the given v.
    Zero vectors give σ = 0 and leave v unchanged, as in the matrix version.

    Parameters
    ----------
    kernel : ndarray (out, kh, kw, in)
    v : ndarray (1, H, W, in)
        Input-side vector (unit norm); not modified.
    input_hw : (H, W)
    stride, padding : int or pair
    iterations : int >= 0

    Returns
    -------
    sigma : 0-d ndarray, u : (1, H', W', out), v : (1, H, W, in)
    """
    _check_kernel(kernel, "conv_power_iteration")
    shape = (1, int(input_hw[0]), int(input_hw[1]), kernel.shape[3])
    if tuple(v.shape) != shape:
        raise ValueError(f"conv_power_iteration: v must have shape {shape}, got {tuple(v.shape)}")
    iterations = check_int(iterations, "iterations", "conv_power_iteration", minimum=0)
    if iterations == 0:
        u, sigma = normalized(conv2d(v, kernel, stride, padding))
        return sigma, u, v
    for _ in range(int(iterations)):
        u, _ = normalized(conv2d(v, kernel, stride, padding))
        v, sigma = normalized(conv2d_input_grad(u, kernel, input_hw, stride, padding), fallback=v)
    return sigma, u, v


def conv_operator_norm(
    layer_or_kernel: Any,
    input_hw: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    iterations: int = 200,
    seed: int = 0,
) -> float:
    """‖A‖₂ of a convolution (zero padding, any stride) by power iteration.

    Parameters
    ----------
    layer_or_kernel : Conv2d or ndarray (out, kh, kw, in)
        A layer supplies its kernel, stride and padding (the arguments are then ignored) and,
        unless ``input_hw`` is given, its last input size ``input_hw``.
    input_hw : (H, W)
    stride, padding : int or pair
    iterations : int
        Power-iteration steps from a seeded random start. The error of σ shrinks like
        (σ₂/σ₁)^(2·iterations); convolutions often have close top singular values, so use
        hundreds of steps (and float64) for several correct digits.
    seed : int

    Returns
    -------
    float
        The estimate (a lower bound that converges to ‖A‖₂).
    """
    kernel, hw, stride, padding = _geometry(layer_or_kernel, input_hw, stride, padding,
                                            "conv_operator_norm")
    iterations = check_int(iterations, "iterations", "conv_operator_norm", minimum=1)
    v = random_unit_vector((1, *hw, kernel.shape[3]), kernel, seed, "conv_operator_norm")
    sigma, _, _ = conv_power_iteration(kernel, v, hw, stride, padding, iterations)
    return float(sigma)


def conv_singular_values_fft(kernel: Any, input_hw: Any) -> np.ndarray:
    """All singular values of the circular (periodic) stride-1 convolution, by the 2-D FFT.

    A circular correlation y[p] = Σ_t K_t x[p + t] (t over the kh×kw taps, indices mod (H, W))
    is diagonalised by the 2-D DFT: at frequency f the (out, in) block is the complex
    conjugate of K̂(f) = Σ_t K_t e^{-2πi⟨f, t⟩}, the DFT of the kernel zero-padded to (H, W).
    The singular values of A are those of the H·W blocks (a conjugate, a shift of the window
    or correlation vs. convolution do not change them). Computed on the host in float64.

    Parameters
    ----------
    kernel : ndarray (out, kh, kw, in), kh <= H and kw <= W
    input_hw : (H, W)

    Returns
    -------
    ndarray (H·W·min(out, in),)
        Sorted in decreasing order; the first is ‖A‖₂.
    """
    _check_kernel(kernel, "conv_singular_values_fft")
    height, width = as_pair(tuple(int(s) for s in input_hw), "input_hw",
                            "conv_singular_values_fft", 1)
    host = np.asarray(to_numpy(kernel), dtype=np.float64)
    if host.shape[1] > height or host.shape[2] > width:
        raise ValueError(
            f"conv_singular_values_fft: kernel {host.shape[1]}x{host.shape[2]} is larger than "
            f"the input {height}x{width}; the circular formula needs kh <= H and kw <= W"
        )
    spectrum = np.fft.fft2(host, s=(height, width), axes=(1, 2))  # (out, H, W, in)
    blocks = spectrum.transpose(1, 2, 0, 3)  # (H, W, out, in): one matrix per frequency
    values = np.linalg.svd(blocks, compute_uv=False).reshape(-1)
    return np.sort(values)[::-1]


def conv_as_dense_matrix(
    kernel: Any, input_hw: Any, stride: Any = 1, padding: Any = 0, boundary: str = "zero"
) -> np.ndarray:
    """The convolution as an explicit (H'·W'·out, H·W·in) host matrix (small sizes only).

    Column j is the convolution of the j-th basis image (a single 1 at the C-order flat index j
    of an (H, W, in) image), flattened in C order: all H·W·in basis images are convolved as
    one batch with :func:`~specnorm_np.ops.conv.conv2d`.

    Parameters
    ----------
    kernel : ndarray (out, kh, kw, in)
    input_hw : (H, W)
    stride, padding : int or pair
    boundary : {"zero", "circular"}
        ``"circular"`` wraps the image around instead of zero padding: (kh-1)//2 rows on top and
        the rest of kh-1 at the bottom (likewise for the width), so that with stride 1 the output
        is (H, W); ``padding`` must then be 0.

    Returns
    -------
    ndarray, float64 for a float64 kernel (the kernel's dtype otherwise)
    """
    _check_kernel(kernel, "conv_as_dense_matrix")
    host = to_numpy(kernel)
    height, width = as_pair(tuple(int(s) for s in input_hw), "input_hw", "conv_as_dense_matrix",
                            1)
    channels = host.shape[3]
    size = height * width * channels
    basis = np.eye(size, dtype=host.dtype).reshape(size, height, width, channels)
    if boundary == "circular":
        if as_pair(padding, "padding", "conv_as_dense_matrix", 0) != (0, 0):
            raise ValueError("conv_as_dense_matrix: boundary='circular' pads by wrapping; "
                             f"padding must be 0, got {padding!r}")
        kh, kw = host.shape[1:3]
        wrap = ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0))
        basis = np.pad(basis, wrap, mode="wrap")
    elif boundary != "zero":
        raise ValueError(f"conv_as_dense_matrix: boundary must be 'zero' or 'circular', "
                         f"got {boundary!r}")
    images = conv2d(basis, host, stride, padding)  # (size, H', W', out)
    return images.reshape(size, -1).T.copy()


def conv_as_linear_operator(
    kernel: Any, input_hw: Any, stride: Any = 1, padding: Any = 0
) -> scipy.sparse.linalg.LinearOperator:
    """The convolution as a ``scipy.sparse.linalg.LinearOperator`` (host, float64).

    ``matvec`` is ``conv2d`` on the vector reshaped to (1, H, W, in) and ``rmatvec`` its
    adjoint ``conv2d_input_grad``; ``matmat`` convolves all columns as one batch. Shape
    (H'·W'·out, H·W·in), flattening in C order as :func:`conv_as_dense_matrix`. Use
    ``scipy.sparse.linalg.svds(op, k=1)`` for the top singular value at sizes where the dense
    matrix is too big.
    """
    _check_kernel(kernel, "conv_as_linear_operator")
    host = np.asarray(to_numpy(kernel), dtype=np.float64)
    height, width = as_pair(tuple(int(s) for s in input_hw), "input_hw",
                            "conv_as_linear_operator", 1)
    in_channels, out_channels = host.shape[3], host.shape[0]
    out_h, out_w = conv_output_hw((height, width), host.shape[1:3], stride, padding,
                                  owner="conv_as_linear_operator")
    n_in, n_out = height * width * in_channels, out_h * out_w * out_channels

    def matmat(columns: np.ndarray) -> np.ndarray:
        images = np.asarray(columns, dtype=np.float64).T.reshape(-1, height, width, in_channels)
        return conv2d(images, host, stride, padding).reshape(images.shape[0], n_out).T

    def rmatmat(columns: np.ndarray) -> np.ndarray:
        images = np.asarray(columns, dtype=np.float64).T.reshape(-1, out_h, out_w, out_channels)
        result = conv2d_input_grad(images, host, (height, width), stride, padding)
        return result.reshape(images.shape[0], n_in).T

    from scipy.sparse.linalg import LinearOperator

    return LinearOperator(
        (n_out, n_in),
        matvec=lambda x: matmat(np.reshape(x, (n_in, 1)))[:, 0],
        rmatvec=lambda y: rmatmat(np.reshape(y, (n_out, 1)))[:, 0],
        matmat=matmat,
        rmatmat=rmatmat,
        dtype=np.float64,
    )


def layer_spectra(model: Module, iterations: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    """Side by side, for every weight of ``model``: the reshaped-matrix σ and, for conv layers
    that have seen an input, the operator norm.

    Returns
    -------
    list of dict, one per weight (``regularize=True``), in ``named_parameters`` order, with keys
        ``name``, ``shape``, ``kind`` ("linear" for 2-D weights, "conv" for Conv2d kernels, else
        "other"), ``matrix_sigma`` (σ₁ of ``W.reshape(out, -1)`` by SVD), ``operator_norm``
        (power iteration with ``iterations`` steps at the layer's ``input_hw``, stride and
        padding; equal to ``matrix_sigma`` for a Linear weight; None for a conv layer without
        ``input_hw``), ``input_hw``, and ``taps_bound`` (√(kh·kw)·matrix_sigma, an upper bound
        of the operator norm for stride 1).
    """
    convs = {id(m.weight): m for m in model.modules() if isinstance(m, Conv2d)}
    rows = []
    for name, param in model.named_parameters():
        if not param.regularize:
            continue
        weight = param.data
        host = np.asarray(to_numpy(weight), dtype=np.float64)
        sigma = float(np.linalg.svd(host.reshape(host.shape[0], -1), compute_uv=False)[0])
        layer = convs.get(id(param))
        row: dict[str, Any] = {"name": name, "shape": tuple(weight.shape), "matrix_sigma": sigma}
        if layer is not None:
            kh, kw = layer.kernel_size
            operator = None
            if layer.input_hw is not None:
                operator = conv_operator_norm(layer, iterations=iterations, seed=seed)
            row.update(kind="conv", operator_norm=operator, input_hw=layer.input_hw,
                       taps_bound=float(np.sqrt(kh * kw)) * sigma)
        else:
            kind = "linear" if weight.ndim == 2 else "other"
            row.update(kind=kind, operator_norm=sigma if kind == "linear" else None,
                       input_hw=None, taps_bound=sigma if kind == "linear" else None)
        rows.append(row)
    return rows
