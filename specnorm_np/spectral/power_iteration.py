"""Power iteration for the largest singular value, and the paper's printed Algorithm 1.

Normalized power iteration (what the paper intends, ``PAPER.md`` Section 2.4): from a unit
vector v of the input (column) side, one step is ::

    u = W v / ‖W v‖          (left vector, output side)
    v = Wᵀ u / ‖Wᵀ u‖        (right vector, input side; kept for the next step)
    σ = uᵀ W v = ‖Wᵀ u‖      (the new v makes uᵀ W v equal to ‖Wᵀ u‖: no third product)

One W-multiply and one Wᵀ-multiply per step. The error of v shrinks like (σ₂/σ₁)² per step and
the error of σ like its square, so one step per SGD step on a slowly changing W is enough
(the paper's observation). σ never exceeds σ₁ (it is a Rayleigh-quotient estimate).

A zero matrix (or a v orthogonal to the row space of W) gives σ = 0, u = 0 and leaves v
unchanged: no division by zero, no NaN, and the vector is still a unit vector when W becomes
non-zero again. The test is done with ``xp.where``, without a device-to-host synchronisation.

The printed Algorithm 1 omits the normalization; :func:`literal_algorithm1` runs it as printed,
to show what it computes (see its docstring).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from specnorm_np._validation import check_int
from specnorm_np.backend import get_array_module
from specnorm_np.spectral.views import as_matrix

__all__ = [
    "power_iteration",
    "top_singular_triplet",
    "literal_algorithm1",
    "random_unit_vector",
    "normalized",
]


def normalized(x: Any, fallback: Any = None) -> tuple[Any, Any]:
    """``(x / ‖x‖, ‖x‖)`` for an array of any shape (the norm is over all entries).

    Where ``‖x‖ = 0`` the result is ``fallback`` (zeros when None) instead of NaN. The norm is
    returned as a 0-d array of ``x``'s module (no host synchronisation).
    """
    if type(x) is np.ndarray and x.ndim > 0 and (fallback is None or (
            type(fallback) is np.ndarray and fallback.shape == x.shape
            and fallback.dtype == x.dtype and x.flags.c_contiguous
            and fallback.flags.c_contiguous)):
        # Fast path on the host, where testing the norm costs nothing: a positive norm skips
        # the two ``where`` of the reference route, whose fixed costs were a tenth of the
        # regularizer's time in an MLP training step. Same values, dtypes, array types and
        # memory layouts as the reference route (tested).
        flat = x.reshape(-1)
        norm = np.sqrt(flat @ flat)
        if norm > 0:
            return x / norm, norm
    return _normalized_reference(x, fallback)


def _normalized_reference(x: Any, fallback: Any = None) -> tuple[Any, Any]:
    """The reference route of :func:`normalized` (any array module, no host synchronisation)."""
    xp = get_array_module(x)
    flat = x.reshape(-1)
    norm = xp.sqrt(flat @ flat)
    positive = norm > 0
    unit = x / xp.where(positive, norm, 1)
    if fallback is not None:
        unit = xp.where(positive, unit, fallback)
    return unit, norm


def random_unit_vector(shape: tuple[int, ...] | int, like: Any, seed: int = 0,
                       key: str = "") -> Any:
    """A seeded standard-normal draw, normalized to unit length, on ``like``'s device and dtype.

    The draw is made on the host by ``numpy.random.default_rng([seed, crc32(key)])`` (so each
    named weight gets its own reproducible stream, independent of the order in which weights
    are met) and then moved with ``xp.asarray``.

    Parameters
    ----------
    shape : int or tuple of int
        (n,) for a matrix's input side, (1, H, W, C) for an image-shaped vector.
    like : ndarray
        Gives the array module and dtype (typically the weight).
    seed : int
    key : str
        Distinguishes the vectors of different weights (e.g. the parameter name).
    """
    rng = np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])
    host = rng.standard_normal(shape)
    host /= np.linalg.norm(host)
    xp = get_array_module(like)
    return xp.asarray(host.astype(like.dtype))


def power_iteration(weight: Any, v: Any, iterations: int = 1) -> tuple[Any, Any, Any]:
    """Normalized power iteration for the top singular triplet of a weight's matrix view.

    Parameters
    ----------
    weight : ndarray, shape (m, n) or (out, kh, kw, in)
        Any matrix (tall, wide, square, rank-deficient, zero); a conv kernel is used through
        :func:`~specnorm_np.spectral.views.as_matrix` (m = out, n = kh·kw·in).
    v : ndarray, shape (n,)
        The current right (input-side) vector, e.g. the one returned by the previous call.
        It should be a unit vector; it is not modified.
    iterations : int
        Number of steps (>= 0). ``0`` performs no update of ``v`` and returns the estimate for
        the given v: u = Wv/‖Wv‖, σ = ‖Wv‖ (the value with v held fixed, used in eval mode).

    Returns
    -------
    sigma : 0-d ndarray
        The estimate uᵀ W v of σ₁ (``float(sigma)`` for a Python number).
    u : ndarray, shape (m,)
        Unit left vector (zeros if Wv = 0).
    v : ndarray, shape (n,)
        Unit right vector, to pass to the next call.

    Notes
    -----
    Cost: one product W·v and one Wᵀ·u per iteration (only W·v when ``iterations=0``). Run to
    convergence (many iterations) the result matches ``numpy.linalg.svd`` when σ₁ > σ₂; see
    the module docstring for the update.
    """
    matrix = as_matrix(weight)
    if tuple(v.shape) != (matrix.shape[1],):
        raise ValueError(
            f"power_iteration: v must have shape ({matrix.shape[1]},) for a weight of shape "
            f"{tuple(weight.shape)} (matrix view {tuple(matrix.shape)}), got {tuple(v.shape)}"
        )
    iterations = check_int(iterations, "iterations", "power_iteration", minimum=0)
    if iterations == 0:
        u, sigma = normalized(matrix @ v)
        return sigma, u, v
    for _ in range(int(iterations)):
        u, _ = normalized(matrix @ v)
        v, sigma = normalized(matrix.T @ u, fallback=v)
    return sigma, u, v


def top_singular_triplet(weight: Any) -> tuple[Any, Any, Any]:
    """Exact σ₁, u₁, v₁ of a weight's matrix view by a full SVD (teaching and verification).

    Returns the same ``(sigma, u, v)`` as :func:`power_iteration` (0-d, (m,), (n,)); the sign of
    (u, v) is the SVD's, and σ·u·vᵀ does not depend on it. Costs O(m·n·min(m, n)).
    """
    matrix = as_matrix(weight)
    xp = get_array_module(matrix)
    left, singular_values, right_t = xp.linalg.svd(matrix, full_matrices=False)
    return singular_values[0], left[:, 0], right_t[0]


def literal_algorithm1(weight: Any, v: Any, iterations: int = 1) -> tuple[Any, Any, Any]:
    """The power iteration exactly as printed in the paper's Algorithm 1 (a teaching exhibit).

    ``u ← W v;  v ← Wᵀ u;  σ ← ‖u‖ / ‖v‖``, repeated, with **no normalization**.

    What it really computes (see ``PAPER.md`` Section 2.4 and ``tests/test_spectral_power.py``):

    * after one step from v: σ = ‖W v‖ / ‖WᵀW v‖, which is **1/σ₁** when v is the top right
      singular vector (and tends to 1/σ₁ for any start as the direction converges);
    * ‖u‖ and ‖v‖ scale like σ₁^(2t) after t steps: they overflow to inf for σ₁ > 1 and vanish
      to 0 for σ₁ < 1 (then σ becomes NaN). NumPy warns about the overflow;
    * λ·σ·u·vᵀ from one step of a unit v₁ is λ·(1/σ₁)·(σ₁u₁)·(σ₁²v₁)ᵀ = λσ₁²·u₁v₁ᵀ, the gradient
      of (λ/3)σ₁³ rather than of (λ/2)σ₁² (the third-party Chainer hook's behaviour).

    Parameters
    ----------
    weight : ndarray, shape (m, n) or a conv kernel (its matrix view is used)
    v : ndarray, shape (n,)
    iterations : int >= 1

    Returns
    -------
    sigma : 0-d ndarray, u : (m,), v : (n,)   (unnormalized)
    """
    matrix = as_matrix(weight)
    if tuple(v.shape) != (matrix.shape[1],):
        raise ValueError(
            f"literal_algorithm1: v must have shape ({matrix.shape[1]},), got {tuple(v.shape)}"
        )
    iterations = check_int(iterations, "iterations", "literal_algorithm1", minimum=1)
    xp = get_array_module(matrix)
    for _ in range(int(iterations)):
        u = matrix @ v
        v = matrix.T @ u
        sigma = xp.sqrt(u @ u) / xp.sqrt(v @ v)
    return sigma, u, v
