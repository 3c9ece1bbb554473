"""Seeded weight initialisation (He / Kaiming for ReLU networks)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["kaiming_normal", "as_generator"]


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Accept a Generator, a seed or None (fresh entropy) and return a Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def kaiming_normal(
    shape: tuple[int, ...],
    fan_in: int,
    rng: np.random.Generator | int | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """He et al. (2015) normal init: N(0, 2 / fan_in), which keeps ReLU activations' variance.

    Parameters are created on the host (NumPy); move a model with ``model.to("gpu")``.
    """
    std = np.sqrt(2.0 / fan_in)
    return (as_generator(rng).standard_normal(shape) * std).astype(dtype)
