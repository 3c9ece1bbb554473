"""The spectral norm regularizer of Yoshida & Miyato (2017).

The penalty is (λ/2)·Σ_l σ(W_l)² over the weights of the model (Linear weights and conv kernels;
never biases or BatchNorm parameters). Its gradient with respect to W_l is λ·σ_l·u_l·v_lᵀ, where
u_l, v_l are the top left and right singular vectors (dσ/dW = u vᵀ when σ₁ is simple). The
singular triplet is estimated by the normalized power iteration of
:func:`~specnorm_np.spectral.power_iteration.power_iteration`, with one persistent unit vector
per weight that is advanced by ``power_iterations`` steps per training step (the paper uses 1).

Use in a training step::

    reg = SpectralNormRegularizer(lam=0.01)
    logits = model.forward(x); loss, dlogits = criterion(logits, y); model.backward(dlogits)
    reported_loss = loss + reg.penalty(model)   # does not advance the power iteration
    reg.add_grad(model)                         # advances it once, adds λσuvᵀ to each .grad
    optimizer.step()

Modes
-----
``mode="matrix"`` (the paper): σ of the matrix view ``W.reshape(out, -1)``.
``mode="operator"``: for each conv layer, σ of the convolution as a linear map on images of the
layer's last input size (``Conv2d.input_hw``), with its stride and zero padding. The power
iteration runs through :func:`~specnorm_np.ops.conv.conv2d` (u = Av/‖Av‖, output side) and its
adjoint :func:`~specnorm_np.ops.conv.conv2d_input_grad` (v = Aᵀu/‖Aᵀu‖, input side) on vectors of
shape (1, H, W, in) and (1, H', W', out). Since σ = ⟨u, conv(v; K)⟩ is linear in the kernel K,
dσ/dK = ``conv2d_weight_grad(x=v, dy=u)``: the weight gradient of the layer for *input* v and
*output gradient* u. Linear weights use the matrix σ (which is their operator norm). This mode
needs the model (a Module) as ``params``, and a forward pass before the first call.
``exact=True``: σ, u, v from a full SVD (of the matrix view, or of the dense convolution matrix
in operator mode, small inputs only) instead of the power iteration; for teaching and tests.

Modes of the regularizer itself: :meth:`train` (default) advances the vectors in
:meth:`add_grad`; after :meth:`eval` nothing in
:attr:`states` changes, and the gradient is that of (λ/2)·‖W v‖² with the stored v held fixed
(u = Wv/‖Wv‖, σ = ‖Wv‖).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from specnorm_np._validation import check_choice, check_int, check_number
from specnorm_np.backend import get_array_module, to_numpy
from specnorm_np.nn.conv import Conv2d
from specnorm_np.nn.module import Module
from specnorm_np.ops.conv import conv2d_weight_grad
from specnorm_np.ops.im2col import conv_output_hw
from specnorm_np.spectral import conv_operator
from specnorm_np.spectral.power_iteration import (
    power_iteration,
    random_unit_vector,
    top_singular_triplet,
)
from specnorm_np.spectral.views import as_matrix, named_weights

__all__ = ["SpectralNormRegularizer", "SpectralState"]

_MAX_DENSE_ENTRIES = 2**24  # exact operator mode builds the dense conv matrix: keep it small


@dataclass
class SpectralState:
    """Per-weight state of the power iteration, on the weight's device.

    Attributes
    ----------
    v : ndarray, (n,) in matrix mode or (1, H, W, in) in operator mode
        The persistent input-side unit vector.
    u : ndarray or None, (out,) or (1, H', W', out)
        Output-side unit vector of the last training step (the last
        :meth:`SpectralNormRegularizer.add_grad` in training mode; None before).
    sigma : 0-d ndarray or None
        σ estimate of that step.
    """

    v: Any
    u: Any = None
    sigma: Any = None


class SpectralNormRegularizer:
    """(λ/2)·Σσ(W)² over the weights, with gradient λ·σ·u·vᵀ added to each weight's ``.grad``.

    Parameters
    ----------
    lam : float
        λ >= 0 (the paper uses 0.01).
    power_iterations : int
        Power-iteration steps per training step (>= 1; the paper uses 1).
    seed : int
        Seeds the starting vectors: weight ``name`` starts from a standard-normal draw of
        ``numpy.random.default_rng([seed, crc32(name)])``, normalized, on the weight's device.
    exact : bool
        Use a full SVD instead of the power iteration.
    mode : {"matrix", "operator"}
        See the module docstring.

    ``params`` (in :meth:`penalty` and :meth:`add_grad`) is a Module (recommended;
    required for ``mode="operator"``), ``(name, Parameter)`` pairs or bare Parameters; the
    names, the keys of :attr:`states` and of :meth:`state_dict`, follow
    :func:`~specnorm_np.spectral.views.named_weights` (qualified names for a Module).
    """

    def __init__(
        self,
        lam: float = 0.01,
        power_iterations: int = 1,
        seed: int = 0,
        exact: bool = False,
        mode: str = "matrix",
    ) -> None:
        owner = "SpectralNormRegularizer"
        self.lam = check_number(lam, "lam", owner, minimum=0)
        self.power_iterations = check_int(power_iterations, "power_iterations", owner, minimum=1)
        check_choice(mode, "mode", owner, ("matrix", "operator"))
        self.seed = int(seed)
        self.exact = bool(exact)
        self.mode = mode
        self.training = True
        self.states: dict[str, SpectralState] = {}

    # ---- modes ----------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> SpectralNormRegularizer:
        """Training mode: :meth:`add_grad` advances the power iteration."""
        self.training = bool(mode)
        return self

    def eval(self) -> SpectralNormRegularizer:
        """Evaluation mode: the stored vectors never change. Returns self."""
        return self.train(False)

    # ---- the penalty and its gradient -----------------------------------------------------------
    def penalty(self, params: Any) -> float:
        """(λ/2)·Σσ² with the current weights and vectors; does not advance the iteration.

        σ of each weight is ‖W v‖ with its stored unit vector v (the estimate whose gradient
        :meth:`add_grad` adds in eval mode), or σ₁ from the SVD when ``exact``. A weight met
        for the first time gets its seeded starting vector, exactly as :meth:`add_grad` would.
        """
        total = 0.0
        for name, param, layer in self._targets(params):
            sigma, _, _ = self._triplet(name, param.data, layer, iterations=0)
            total += float(sigma) ** 2
        return 0.5 * self.lam * total

    def add_grad(self, params: Any) -> None:
        """Add λ·σ·u·vᵀ (reshaped to the weight's shape) to each weight's ``.grad``.

        Call once per training step, after ``model.backward`` (which sets ``.grad``). In
        training mode the power iteration first advances by ``power_iterations`` steps and the
        new v, u, σ are stored; in eval mode nothing is stored. A ``.grad`` that is None is
        treated as zero. Matrix mode costs one W·v and one Wᵀ·u per weight per step, and the
        rank-1 update is done in place.

        """
        for name, param, layer in self._targets(params):
            self._add_term(param, layer, *self._advance(name, param, layer))

    def _advance(self, name: str, param: Any, layer: Any) -> tuple[Any, Any, Any]:
        """σ, u, v of this step (advancing and storing the vectors in training mode)."""
        iterations = self.power_iterations if self.training else 0
        sigma, u, v = self._triplet(name, param.data, layer, iterations)
        if self.training:  # (exact mode keeps the SVD's triplet here, for logging)
            state = self.states.get(name)
            if state is None:
                state = self.states[name] = SpectralState(v)
            state.v, state.u, state.sigma = v, u, sigma
        return sigma, u, v

    def _add_term(self, param: Any, layer: Any, sigma: Any, u: Any, v: Any) -> None:
        """``param.grad += λσ·dσ/dW`` (a None grad counts as zero)."""
        if param.grad is None:
            param.grad = get_array_module(param.data).zeros_like(param.data)
        if layer is None:
            _add_rank_one(param.grad, self.lam * sigma, u, v)
        else:
            # σ = ⟨u, conv(v; K)⟩ is linear in K, so dσ/dK is the weight gradient of the
            # convolution for input v and output gradient u.
            dsigma = conv2d_weight_grad(
                v, u, param.data.shape[1:3], layer.stride, layer.padding
            )
            param.grad += (self.lam * sigma) * dsigma

    # ---- logging --------------------------------------------------------------------------------
    def sigmas(self) -> dict[str, float]:
        """σ of every weight at the last training step (add_grad), by name."""
        return {name: float(s.sigma) for name, s in self.states.items() if s.sigma is not None}

    def vectors(self, name: str) -> tuple[Any, Any]:
        """``(u, v)`` of the weight ``name`` (u is None before the first training step)."""
        if name not in self.states:
            raise KeyError(f"SpectralNormRegularizer: no state for {name!r}; known: "
                           f"{sorted(self.states)}")
        state = self.states[name]
        return state.u, state.v

    # ---- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies: ``"<name>.v"`` for every weight, ``"<name>.u"``, ``"<name>.sigma"`` after
        a training step."""
        out: dict[str, np.ndarray] = {}
        for name, state in self.states.items():
            out[name + ".v"] = np.array(to_numpy(state.v), copy=True)
            if state.u is not None:
                out[name + ".u"] = np.array(to_numpy(state.u), copy=True)
                out[name + ".sigma"] = np.array(to_numpy(state.sigma), copy=True)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (replacing all current states).

        The arrays are kept on the host and moved to each weight's device and dtype at its
        next use, so loading works before or after ``model.to(...)``.
        """
        states: dict[str, SpectralState] = {}
        for key in state:
            name, _, field = key.rpartition(".")
            if field not in ("v", "u", "sigma") or not name:
                raise KeyError(f"SpectralNormRegularizer.load_state_dict: unexpected key {key!r} "
                               "(expected '<name>.v', '<name>.u' or '<name>.sigma')")
        for key, value in state.items():
            name, _, field = key.rpartition(".")
            if name + ".v" not in state:
                raise KeyError(f"SpectralNormRegularizer.load_state_dict: {key!r} without "
                               f"{name + '.v'!r}")
            entry = states.setdefault(name, SpectralState(v=None))
            setattr(entry, field, np.array(to_numpy(value), copy=True))
        self.states = states

    # ---- internals ------------------------------------------------------------------------------
    def _targets(self, params: Any) -> list[tuple[str, Any, Any]]:
        """(name, Parameter, conv layer or None) for every weight."""
        weights = named_weights(params, owner="SpectralNormRegularizer")
        if self.mode == "matrix":
            return [(name, p, None) for name, p in weights]
        if not isinstance(params, Module):
            raise ValueError(
                "SpectralNormRegularizer(mode='operator'): params must be the model (a Module), "
                "which knows each conv layer's input size, stride and padding; got "
                f"{type(params).__name__}"
            )
        convs = {id(m.weight): m for m in params.modules() if isinstance(m, Conv2d)}
        targets = []
        for name, p in weights:
            layer = convs.get(id(p))
            if layer is not None and layer.input_hw is None:
                raise ValueError(
                    f"SpectralNormRegularizer(mode='operator'): {layer.label} ({name}) has no "
                    "input size yet; run a forward pass first (Conv2d.input_hw is None)"
                )
            targets.append((name, p, layer))
        return targets

    def _triplet(self, name: str, weight: Any, layer: Any, iterations: int) -> tuple[Any, ...]:
        """σ, u, v for one weight: by SVD when exact, else from the stored v (not stored here)."""
        if self.exact:
            if layer is None:
                return top_singular_triplet(weight)
            return _exact_operator_triplet(weight, layer)
        v = self._start_vector(name, weight, layer)
        if layer is None:
            return power_iteration(weight, v, iterations)
        return conv_operator.conv_power_iteration(
            weight, v, layer.input_hw, layer.stride, layer.padding, iterations
        )

    def _start_vector(self, name: str, weight: Any, layer: Any) -> Any:
        """The stored v of ``name`` on the weight's device and dtype (created when missing)."""
        state = self.states.get(name)
        if (layer is None and state is not None and weight.ndim >= 2
                and type(state.v) is type(weight)
                and state.v.dtype == weight.dtype
                and state.v.shape == (weight.size // max(1, weight.shape[0]),)):
            return state.v  # the common case, every step after the first (checks below)
        if layer is None:
            shape: tuple[int, ...] = (as_matrix(weight).shape[1],)
        else:
            shape = (1, *layer.input_hw, weight.shape[3])
        if state is not None and layer is not None and tuple(state.v.shape) != shape:
            warnings.warn(
                f"SpectralNormRegularizer: conv layer {name!r} now sees inputs of size "
                f"{tuple(layer.input_hw)} (its stored vector is for {tuple(state.v.shape[1:3])}); "
                "the operator-mode power iteration restarts from a fresh vector",
                RuntimeWarning,
                stacklevel=3,
            )
            state = None
        if state is None:
            # first use, or an operator-mode layer now sees a different input size
            state = SpectralState(random_unit_vector(shape, weight, self.seed, name))
            self.states[name] = state
        if tuple(state.v.shape) != shape:
            raise ValueError(
                f"SpectralNormRegularizer: stored vector for {name!r} has shape "
                f"{tuple(state.v.shape)}, the weight {tuple(weight.shape)} needs {shape}"
            )
        xp = get_array_module(weight)
        if get_array_module(state.v) is not xp or state.v.dtype != weight.dtype:
            # after load_state_dict, model.to(...) or astype(...): follow the weight
            state.v = _moved(state.v, weight)
            state.u = None if state.u is None else _moved(state.u, weight)
            state.sigma = None if state.sigma is None else _moved(state.sigma, weight)
        return state.v


def _moved(array: Any, like: Any) -> Any:
    xp = get_array_module(like)
    return xp.asarray(np.asarray(to_numpy(array)).astype(like.dtype))


_RANK_ONE_BLOCK = 1 << 17  # entries per block of rows in the reference route (512 KiB float32)
_BLAS_MIN_ENTRIES = 1 << 14  # smaller gradients: the BLAS call's fixed cost is not worth it


def _add_rank_one(grad: Any, scale: Any, u: Any, v: Any) -> None:
    """``grad += scale · u vᵀ`` in the matrix view of ``grad``, in place.

    Two routes, tested equal: a writeable C-contiguous float32/float64 NumPy gradient of at least
    ``_BLAS_MIN_ENTRIES`` entries goes to BLAS ``?ger`` (:func:`_add_rank_one_blas`: one pass
    over the gradient, no temporary); everything else (CuPy arrays, other dtypes, small or
    strided or read-only gradients) to the plain reference :func:`_add_rank_one_blocked` (which
    raises NumPy's error for a read-only one).
    """
    if (isinstance(grad, np.ndarray) and grad.dtype in (np.float32, np.float64)
            and grad.flags.c_contiguous and grad.flags.writeable
            and grad.size >= _BLAS_MIN_ENTRIES
            and _add_rank_one_blas(grad, scale, u, v)):
        return
    _add_rank_one_blocked(grad, scale, u, v)


def _add_rank_one_blocked(grad: Any, scale: Any, u: Any, v: Any) -> None:
    """Reference route (any array module): ``grad += scale · u vᵀ``, a block of rows at a time.

    The outer product is formed one block of rows at a time, so the only temporary is one block
    (at most ``_RANK_ONE_BLOCK`` entries, cache-sized), never a second copy of the whole
    gradient; each entry of ``grad`` is read and written once. A gradient that is not
    C-contiguous (its matrix view would be a copy) is updated with one full-size temporary.
    """
    flags = getattr(grad, "flags", None)
    if flags is None or not flags.c_contiguous:  # reshape would copy: no in-place view
        grad += ((scale * u)[:, None] * v[None, :]).reshape(grad.shape)
        return
    matrix = grad.reshape(grad.shape[0], -1)  # a view of the contiguous gradient
    scaled_u = scale * u
    rows = max(1, _RANK_ONE_BLOCK // max(1, matrix.shape[1]))
    for start in range(0, matrix.shape[0], rows):
        block = matrix[start:start + rows]
        block += scaled_u[start:start + rows, None] * v[None, :]


#: threadpoolctl controllers of the BLAS libraries loaded at the first call (SciPy's among them);
#: None before it, False when they cannot be inspected (then the BLAS route is never used)
_blas_pools: list[Any] | bool | None = None
#: SciPy's ``sger`` / ``dger`` by dtype, looked up with the pools
_ger: dict[np.dtype, Any] = {}


def _add_rank_one_blas(grad: np.ndarray, scale: Any, u: Any, v: Any) -> bool:
    """Fast route: ``grad += scale · u vᵀ`` by SciPy's BLAS ``?ger``, in place; False if unusable.

    ``ger`` computes ``A += α x yᵀ`` for a column-major A. The C-contiguous (m, n) matrix view of
    ``grad`` is, read as column-major, the (n, m) matrix ``gradᵀ``, and
    ``gradᵀ += α v uᵀ`` is the update wanted; so ``ger(α, v, u, a=gradᵀ, overwrite_a=True)``
    writes into ``grad``'s own memory (checked; were it a copy, it is copied back).

    SciPy may link a BLAS of its own, with its own thread pool. A multi-threaded ``ger`` leaves
    that pool's threads spinning while NumPy's threads start the next product, which made a
    whole multi-threaded MLP training step more than twice as slow (the README's Performance
    section has the measurement). So the call runs with every BLAS pool held at one thread
    (threadpoolctl's per-library ``set_num_threads``, restored right after; a few microseconds);
    a memory-bound rank-one update gains nothing from threads anyway. (Another Python thread
    calling BLAS during those microseconds would run single-threaded too.)
    """
    global _blas_pools, _ger
    if _blas_pools is None:
        try:
            from scipy.linalg import blas
            from threadpoolctl import ThreadpoolController

            _ger = {np.dtype(np.float32): blas.sger, np.dtype(np.float64): blas.dger}
            _blas_pools = [c for c in ThreadpoolController().lib_controllers
                           if c.user_api == "blas"]
        except Exception:  # noqa: BLE001 - no SciPy or no introspection: no way to hold
            _blas_pools = False  # the threads, so the reference route is used
    if _blas_pools is False:
        return False
    matrix_t = grad.reshape(grad.shape[0], -1).T  # (n, m), Fortran-ordered view of grad
    u = np.asarray(u, dtype=grad.dtype)
    v = np.asarray(v, dtype=grad.dtype)
    ger = _ger[grad.dtype]
    previous = [pool.get_num_threads() for pool in _blas_pools]
    for pool, threads in zip(_blas_pools, previous):
        if threads != 1:
            pool.set_num_threads(1)
    try:
        result = ger(float(scale), v, u, a=matrix_t, overwrite_a=True)
    finally:
        for pool, threads in zip(_blas_pools, previous):
            if threads != 1:
                pool.set_num_threads(threads)
    if not np.shares_memory(result, grad):  # pragma: no cover - f2py worked on a copy
        matrix_t[...] = result
    return True


def _exact_operator_triplet(kernel: Any, layer: Any) -> tuple[Any, Any, Any]:
    """σ₁, u₁ (1, H', W', out), v₁ (1, H, W, in) of a conv layer from its dense matrix."""
    height, width = layer.input_hw
    out_hw = conv_output_hw(layer.input_hw, kernel.shape[1:3], layer.stride, layer.padding,
                            owner=layer.label)
    rows = out_hw[0] * out_hw[1] * kernel.shape[0]
    cols = height * width * kernel.shape[3]
    if rows * cols > _MAX_DENSE_ENTRIES:
        raise ValueError(
            f"SpectralNormRegularizer(exact=True, mode='operator'): {layer.label} would need a "
            f"dense {rows}x{cols} matrix; use the power iteration (exact=False) at this size"
        )
    host = np.asarray(to_numpy(kernel), dtype=np.float64)
    dense = conv_operator.conv_as_dense_matrix(host, layer.input_hw, layer.stride, layer.padding)
    left, singular_values, right_t = np.linalg.svd(dense, full_matrices=False)
    u = left[:, 0].reshape(1, *out_hw, kernel.shape[0])
    v = right_t[0].reshape(1, height, width, kernel.shape[3])
    return tuple(_moved(a, kernel) for a in (np.asarray(singular_values[0]), u, v))
