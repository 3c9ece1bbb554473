"""Regularizers that act on the weights after ``model.backward``: weight decay and (re-exported)
the spectral norm regularizer.

All regularizers share one interface, which the trainer uses::

    reported_loss = loss + regularizer.penalty(params)   # a float; changes nothing
    regularizer.add_grad(params)                          # ADDS its gradient to each .grad
    regularizer.train() / regularizer.eval()
    regularizer.state_dict() / regularizer.load_state_dict(state)   # host arrays

``params`` is the model (recommended), ``model.named_parameters()`` or a list of Parameters
(see :func:`specnorm_np.spectral.views.named_weights`). Only *weights* (``regularize=True``:
Linear and conv weights) are touched; biases and BatchNorm parameters never are, as in the
paper.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from specnorm_np._validation import check_number
from specnorm_np.spectral.regularizer import SpectralNormRegularizer
from specnorm_np.spectral.views import named_weights

__all__ = ["WeightDecay", "SpectralNormRegularizer"]


class WeightDecay:
    """(λ/2)·Σ‖W‖²_F over the weights; gradient λ·W (the paper's "decay", λ = 1e-4).

    Parameters
    ----------
    lam : float
        λ >= 0.

    Being an explicit penalty, its gradient goes through the optimizer's momentum like the data
    gradient (as in the paper's setup), unlike "decoupled" weight decay.
    """

    def __init__(self, lam: float = 1e-4) -> None:
        self.lam = check_number(lam, "lam", "WeightDecay", minimum=0)
        self.training = True

    def penalty(self, params: Any) -> float:
        """(λ/2)·Σ_W ‖W‖² (a Python float)."""
        total = 0.0
        for _, param in named_weights(params, owner="WeightDecay"):
            flat = param.data.reshape(-1)
            total += float(flat @ flat)
        return 0.5 * self.lam * total

    def add_grad(self, params: Any) -> None:
        """``W.grad += λ·W`` for every weight (a None grad is treated as zero)."""
        for _, param in named_weights(params, owner="WeightDecay"):
            if param.grad is None:
                param.grad = self.lam * param.data
            else:
                param.grad += self.lam * param.data

    def train(self, mode: bool = True) -> WeightDecay:
        """No effect (no state); kept for the common interface. Returns self."""
        self.training = bool(mode)
        return self

    def eval(self) -> WeightDecay:
        return self.train(False)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Weight decay has no state: an empty dict."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Accepts only the empty state that :meth:`state_dict` returns."""
        if state:
            raise KeyError(f"WeightDecay.load_state_dict: no state expected, got keys "
                           f"{sorted(state)}")
