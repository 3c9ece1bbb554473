"""Spectral normalization (Miyato et al., ICLR 2018, "SN-GAN") as a wrapper module.

``SpectralNorm(layer)`` runs ``layer`` with the weight W̄ = W / σ(W), where σ(W) is estimated by
the normalized power iteration on the matrix view ``W.reshape(out, -1)`` with persistent
vectors u (out,) and v (kh·kw·in,) kept as buffers (saved by ``state_dict``, moved by ``to``).
The vectors advance by ``power_iterations`` steps in each training-mode forward and never in
eval mode. Where the regularizer *penalises* σ, normalization *divides it out*: the layer's
spectral norm is kept near 1.

Backward (σ's dependence on W included, u and v held constant). With σ(W) = uᵀ W v we have
∂σ/∂W = u vᵀ; with G = dL/dW̄ (what the wrapped layer's backward computes for weight W̄) ::

    dL/dW_ij = Σ_kl G_kl ∂(W_kl/σ)/∂W_ij = G_ij/σ − (Σ_kl G_kl W_kl/σ²)·u_i v_j
             = (G − ⟨G, W̄⟩ · u vᵀ) / σ.

In training mode σ = ‖Wᵀu‖ after the step, which equals uᵀ W v with the new v, so the same
formula applies. (Note: the coefficient is ⟨G, W̄⟩, not ⟨G, u vᵀ⟩; the two agree only when W̄
is rank one.) At convergence dσ₁/dW = u₁v₁ᵀ exactly, so holding u, v constant loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from specnorm_np._validation import check_int
from specnorm_np.backend import get_array_module
from specnorm_np.nn.module import Module, Parameter
from specnorm_np.spectral.power_iteration import normalized, power_iteration, random_unit_vector
from specnorm_np.spectral.views import as_matrix, from_matrix

__all__ = ["SpectralNorm"]


class SpectralNorm(Module):
    """Wrap a layer with a ``weight`` Parameter (Linear, Conv2d) so it uses W / σ(W).

    Parameters
    ----------
    layer : Module
        Must have a ``weight`` Parameter with at least 2 axes.
    power_iterations : int
        Steps per training-mode forward (>= 1; SN-GAN uses 1).
    seed : int
        Seeds the starting v (standard normal, normalized); u starts as W v / ‖W v‖.

    Attributes
    ----------
    layer : Module
        The wrapped layer; its parameters appear as ``"layer.weight"``, ``"layer.bias"``.
    u : ndarray (out,), v : ndarray (prod(weight.shape[1:]),)
        Buffers: the persistent singular-vector estimates.
    sigma : 0-d ndarray or None
        σ used by the last forward (for logging).

    Shapes are those of the wrapped layer.
    """

    def __init__(self, layer: Module, power_iterations: int = 1, seed: int = 0) -> None:
        super().__init__()
        weight = getattr(layer, "weight", None)
        if not isinstance(layer, Module) or not isinstance(weight, Parameter) \
                or weight.data.ndim < 2:
            raise ValueError(
                "SpectralNorm: expected a layer (Module) with a weight Parameter of at least 2 "
                f"axes, such as Linear or Conv2d; got {type(layer).__name__}"
            )
        self.layer = layer
        self.power_iterations = check_int(power_iterations, "power_iterations", "SpectralNorm",
                                          minimum=1)
        matrix = as_matrix(weight.data)
        v = random_unit_vector((matrix.shape[1],), weight.data, seed, "SpectralNorm")
        u, _ = normalized(matrix @ v)
        self.register_buffer("u", u)
        self.register_buffer("v", v)
        self.sigma: Any = None
        self.label = f"SpectralNorm({layer.label})"

    def forward(self, x: Any) -> Any:
        """Run the layer with W̄ = W/σ; in training mode advance (u, v) first."""
        weight = self.layer.weight.data
        if self.training:
            sigma, u, v = power_iteration(weight, self.v, self.power_iterations)
            self.u, self.v = u, v
        else:
            u, v = self.u, self.v
            sigma = u @ (as_matrix(weight) @ v)
        xp = get_array_module(weight)
        # a zero weight has σ = 0: divide by 1 instead (W̄ = W = 0) rather than produce NaN
        sigma = xp.where(sigma > 0, sigma, 1).astype(weight.dtype)
        normalized_weight = weight / sigma
        y = self._with_weight(normalized_weight, self.layer.forward, x)
        self.sigma = sigma
        self._cache = (normalized_weight, sigma, u, v)
        return y

    def backward(self, dy: Any) -> Any:
        """dL/dx from the layer run with W̄; weight gradient (G − ⟨G, W̄⟩·u vᵀ)/σ (see module).

        The bias (if any) gradient is the layer's own: the bias is not normalized.
        """
        normalized_weight, sigma, u, v = self._require_cache()
        dx = self._with_weight(normalized_weight, self.layer.backward, dy)
        grad = self.layer.weight.grad  # G = dL/dW̄, shape of W
        coefficient = grad.reshape(-1) @ normalized_weight.reshape(-1)  # ⟨G, W̄⟩
        rank_one = from_matrix(u[:, None] * v[None, :], grad.shape)
        self.layer.weight.grad = (grad - coefficient * rank_one) / sigma
        return dx

    def _with_weight(self, weight: Any, function: Callable[[Any], Any], argument: Any) -> Any:
        """Call ``function(argument)`` while the layer's weight holds ``weight``, then restore.

        The original array object is put back (not a copy), so in-place edits of
        ``layer.weight.data`` (optimizers, gradient checks) keep working.
        """
        original = self.layer.weight.data
        self.layer.weight.data = weight
        try:
            return function(argument)
        finally:
            self.layer.weight.data = original

    def extra_repr(self) -> str:
        return f"power_iterations={self.power_iterations}"
