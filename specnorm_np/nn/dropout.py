"""Inverted dropout (Srivastava et al., 2014), seeded."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from specnorm_np._validation import check_number
from specnorm_np.backend import get_array_module
from specnorm_np.nn._checks import check_grad, check_input
from specnorm_np.nn.init import as_generator
from specnorm_np.nn.module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """Zero each entry with probability ``p`` in training; identity in evaluation.

    *Inverted* dropout: the kept entries are scaled by 1/(1 - p) during training, so the expected
    output equals the input and evaluation needs no rescaling::

        training:   y = x · m / (1 - p),   m_i ~ Bernoulli(1 - p) independently
        evaluation: y = x

    Parameters
    ----------
    p : float
        Drop probability, in [0, 1). ``p = 0`` makes the layer the identity.
    seed : int or numpy.random.Generator or None
        Seeds the layer's own generator, stored as ``self._rng`` (a host
        ``numpy.random.Generator``). The mask is drawn on the host and moved to the data's
        device, so a seed gives the same masks on every backend. :meth:`random_state` and
        :meth:`set_random_state` save and replay it (:mod:`specnorm_np.gradcheck` does, to check
        the layer with a fixed mask).

    Shapes: any ``x`` -> ``y`` of the same shape.
    """

    def __init__(self, p: float = 0.5, *, seed: np.random.Generator | int | None = None) -> None:
        super().__init__()
        self.p = check_number(p, "p", "Dropout", minimum=0, maximum=1, open_high=True)
        self._rng = as_generator(seed)

    def forward(self, x: Any) -> Any:
        """x (any shape) -> y (same shape)."""
        check_input(self, x, ndim=tuple(range(1, 9)), layout="(any shape)")
        if not self.training or self.p == 0.0:
            self._cache = ("identity", (tuple(x.shape), x.dtype))
            return x
        draw_dtype = np.float32 if x.dtype == np.float32 else np.float64
        keep = self._rng.random(x.shape, dtype=draw_dtype) >= self.p
        # the scaled mask m/(1 - p) in the data's dtype, built on the host, then moved
        mask = keep.astype(x.dtype)
        mask *= 1.0 / (1.0 - self.p)
        xp = get_array_module(x)
        if xp is not np:
            mask = xp.asarray(mask)
        self._cache = ("mask", mask)
        return x * mask

    def backward(self, dy: Any) -> Any:
        """dy -> dx. y = x·mask is linear in x with a diagonal Jacobian, so dx = dy·mask
        (and dx = dy in evaluation mode or for p = 0)."""
        kind, value = self._require_cache()
        if kind == "identity":
            check_grad(self, dy, *value)
            return dy
        check_grad(self, dy, value.shape, value.dtype)
        return dy * value

    def random_state(self) -> dict[str, Any]:
        """The state of the layer's generator (a copy): pass it to :meth:`set_random_state` to
        draw the same masks again (gradient checks replay it; checkpoints save it)."""
        return copy.deepcopy(self._rng.bit_generator.state)

    def set_random_state(self, state: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`random_state`."""
        self._rng.bit_generator.state = state

    def extra_repr(self) -> str:
        return f"p={self.p}"
