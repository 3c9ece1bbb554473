"""Adversarial training with ℓ2-normalized gradient perturbations (the paper's Eq. 3).

The paper's baseline "adver." (Goodfellow et al. 2015, with the ℓ2 perturbation of Miyato et
al.): for every example, at the current parameters θ,

    g = ∇ₓ L(x, y; θ),    η = ε · g / ‖g‖₂ (per example),
    loss = α · L(x, y; θ) + (1 − α) · L(x + η, y; θ),      ε = 1, α = 0.5 by default,

and η is treated as a constant when differentiating with respect to θ. One step therefore costs
two forward and two backward passes:

1. forward/backward on x: the clean loss, its parameter gradients G_clean, and dx = ∇ₓL.
   The loss is a mean over the batch, so dx_n = (1/N)·∇ₓℓ_n; the per-example normalization
   removes that factor, and η_n depends on example n only.
2. forward on x + η, backward of (1 − α)·dL/dlogits: the parameter gradients
   (1 − α)·G_adv; then ``param.grad += α·G_clean`` gives the mixed gradient.

Examples whose input gradient is exactly zero get η = 0 (no NaN). In training mode, layers with
batch statistics (BatchNorm) see both forward passes, and dropout draws a new mask for each.
"""

from __future__ import annotations

from typing import Any

from specnorm_np._validation import check_number
from specnorm_np.backend import get_array_module

__all__ = ["adversarial_loss_and_grad", "l2_normalized_perturbation", "AdversarialResult"]


class AdversarialResult(tuple):
    """``(loss, logits)`` as a tuple, plus attributes with the details.

    ``loss, logits = adversarial_loss_and_grad(...)`` unpacks the mixed loss and the clean
    logits; the attributes are ``loss``, ``logits``, ``clean_loss`` (L(x)),
    ``adversarial_loss`` (L(x + η)) and ``perturbation`` (η, shaped like x).
    """

    loss: float
    logits: Any
    clean_loss: float
    adversarial_loss: float
    perturbation: Any

    def __new__(cls, loss: float, logits: Any, clean_loss: float, adversarial_loss: float,
                perturbation: Any) -> AdversarialResult:
        result = super().__new__(cls, (loss, logits))
        result.loss, result.logits = loss, logits
        result.clean_loss, result.adversarial_loss = clean_loss, adversarial_loss
        result.perturbation = perturbation
        return result


def l2_normalized_perturbation(gradient: Any, epsilon: float = 1.0) -> Any:
    """η_n = ε · g_n / ‖g_n‖₂ for every example n (norm over all axes but the first).

    Parameters
    ----------
    gradient : ndarray (N, ...)
        The input gradient g (any scaling per batch: only directions matter).
    epsilon : float >= 0

    Returns
    -------
    ndarray (N, ...), same dtype; rows with ‖g_n‖ = 0 are zero.
    """
    xp = get_array_module(gradient)
    flat = gradient.reshape(gradient.shape[0], -1)
    norms = xp.sqrt((flat * flat).sum(axis=1))
    scale = xp.where(norms > 0, epsilon / xp.where(norms > 0, norms, 1), 0).astype(
        gradient.dtype)
    return (flat * scale[:, None]).reshape(gradient.shape)


def adversarial_loss_and_grad(
    model: Any,
    loss: Any,
    x: Any,
    y: Any,
    epsilon: float = 1.0,
    alpha: float = 0.5,
) -> AdversarialResult:
    """One adversarial-training step's loss and gradients (the paper's Eq. 3).

    Parameters
    ----------
    model : Module
        ``forward(x) -> logits`` and ``backward(dlogits) -> dx`` (which sets every ``.grad``).
    loss : callable
        ``loss(logits, y) -> (float, dlogits)``, e.g. ``SoftmaxCrossEntropy()``.
    x : ndarray (N, ...) float
    y : ndarray (N,) labels
    epsilon : float >= 0
        ℓ2 norm of each example's perturbation (paper: 1).
    alpha : float in [0, 1]
        Weight of the clean loss (paper: 0.5).

    Returns
    -------
    AdversarialResult
        Unpacks as ``(mixed_loss, clean_logits)``; also ``.clean_loss``,
        ``.adversarial_loss`` and ``.perturbation`` (η, shape of x).

    After the call each parameter's ``.grad`` holds α·∇θL(x) + (1 − α)·∇θL(x + η) with η held
    constant; add regularizer gradients after this, as after a plain backward.
    """
    check_number(epsilon, "epsilon", "adversarial_loss_and_grad", minimum=0)
    check_number(alpha, "alpha", "adversarial_loss_and_grad", minimum=0, maximum=1)
    logits = model.forward(x)
    clean_loss, dlogits = loss(logits, y)
    dx = model.backward(dlogits)
    # keep α·G_clean: the next backward sets (overwrites) every .grad
    clean_grads = [(p, None if p.grad is None else alpha * p.grad) for p in model.parameters()]
    perturbation = l2_normalized_perturbation(dx, epsilon)
    logits = logits.copy()  # in case a layer reuses its output buffer in the next forward
    adversarial_logits = model.forward(x + perturbation)
    adversarial_loss, adversarial_dlogits = loss(adversarial_logits, y)
    model.backward((1.0 - alpha) * adversarial_dlogits)
    for param, scaled in clean_grads:
        if scaled is not None:
            param.grad += scaled
    mixed = alpha * float(clean_loss) + (1.0 - alpha) * float(adversarial_loss)
    return AdversarialResult(mixed, logits, float(clean_loss), float(adversarial_loss),
                             perturbation)
