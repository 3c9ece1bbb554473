"""What a certified Lipschitz bound buys: a certified ℓ2 robustness radius per example.

Tsuzuku, Sato & Sugiyama ("Lipschitz-Margin Training", NeurIPS 2018): if the logit map f has
ℓ2 Lipschitz constant at most L, then for any class j the logit difference f_y − f_j is
√2·L-Lipschitz (its gradient with respect to the logits, e_y − e_j, has norm √2). With the
margin m(x) = f_y(x) − max_{j≠y} f_j(x) > 0, no perturbation with ‖ε‖₂ < m(x)/(√2·L) can make
another class's logit reach the true one's, so the prediction at x + ε stays y:

    certified radius r(x) = max(m(x), 0) / (√2·L).

Placed in ``spectral/`` next to :mod:`~specnorm_np.spectral.lipschitz` rather than in
``metrics.py``: it is a corollary of the certificate (it needs the certified L, not a measured
quantity), and ``metrics`` measures what the paper reports. The margins are computed on a
float64 copy of the model in eval mode, the same function the bound certifies.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from specnorm_np.backend import to_numpy
from specnorm_np.nn.module import Module

__all__ = ["logit_margins", "certified_radius", "certified_accuracy"]


def logit_margins(model: Module, x: Any, y: Any, *, batch_size: int = 500) -> np.ndarray:
    """m_i = f_{y_i}(x_i) − max_{j≠y_i} f_j(x_i) on a float64 eval-mode copy of ``model``.

    Parameters
    ----------
    model : Module
    x : ndarray (n, H, W, C) (or (n, d))
    y : ndarray (n,) of int labels

    Returns
    -------
    ndarray (n,), float64, host; positive where the example is classified correctly.
    """
    labels = np.asarray(to_numpy(y)).astype(np.int64).reshape(-1)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(f"logit_margins: {x.shape[0]} examples but {labels.shape[0]} labels")
    clone = copy.deepcopy(model).astype(np.float64).eval()
    margins = []
    for start in range(0, x.shape[0], batch_size):
        logits = np.asarray(to_numpy(clone.forward(x[start:start + batch_size].astype(
            np.float64))), dtype=np.float64)
        part = labels[start:start + batch_size]
        rows = np.arange(part.shape[0])
        true = logits[rows, part]
        others = logits.copy()
        others[rows, part] = -np.inf
        margins.append(true - others.max(axis=1))
    return np.concatenate(margins) if margins else np.zeros(0)


def certified_radius(model: Module, x: Any, y: Any, *, lipschitz: float | None = None,
                     batch_size: int = 500) -> np.ndarray:
    """Per example, max(margin, 0) / (√2·L): a certified ℓ2 radius of the prediction.

    Parameters
    ----------
    model : Module
    x : ndarray (n, H, W, C)
    y : ndarray (n,)
    lipschitz : float, optional
        A certified Lipschitz bound L of ``model``; by default
        :func:`~specnorm_np.spectral.lipschitz.lipschitz_upper_bound` at the input size of x.

    Returns
    -------
    ndarray (n,), float64: 0 for misclassified examples.
    """
    if lipschitz is None:
        from specnorm_np.spectral.lipschitz import lipschitz_upper_bound

        lipschitz = lipschitz_upper_bound(model, tuple(x.shape[1:])).upper
    if not (isinstance(lipschitz, (int, float)) and math.isfinite(lipschitz) and lipschitz > 0):
        raise ValueError(f"certified_radius: lipschitz must be a positive finite number, got "
                         f"{lipschitz!r}")
    margins = logit_margins(model, x, y, batch_size=batch_size)
    return np.maximum(margins, 0.0) / (math.sqrt(2.0) * float(lipschitz))


def certified_accuracy(model: Module, x: Any, y: Any, radius: Any, *,
                       lipschitz: float | None = None, batch_size: int = 500) -> Any:
    """Fraction of examples whose prediction is correct and certified beyond ``radius``.

    An example counts at radius r when r < its certified radius (every ε with ‖ε‖₂ ≤ r keeps
    the prediction); at r = 0 this is the accuracy (ties of the top logit count as wrong).

    Parameters
    ----------
    model, x, y, lipschitz, batch_size
        As in :func:`certified_radius`.
    radius : float or array-like of floats (k,), each >= 0

    Returns
    -------
    float for a scalar radius, else ndarray (k,)
    """
    radii = np.asarray(radius, dtype=np.float64)
    if radii.ndim > 1 or np.any(~np.isfinite(radii)) or np.any(radii < 0):
        raise ValueError(f"certified_accuracy: radius must be a number >= 0 or a 1-D array of "
                         f"them, got {radius!r}")
    per_example = certified_radius(model, x, y, lipschitz=lipschitz, batch_size=batch_size)
    accuracy = (per_example[None, :] > radii.reshape(-1, 1)).mean(axis=1)
    return float(accuracy[0]) if radii.ndim == 0 else accuracy
