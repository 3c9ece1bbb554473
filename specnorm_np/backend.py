"""Array-module selection: the device follows the data.

Every function in specnorm_np that computes asks its inputs which array module to use::

    xp = get_array_module(x)      # numpy for numpy arrays, cupy for cupy arrays
    y = xp.maximum(x, 0)

There is no global array module. A model moves between devices with ``model.to("gpu")``.

Besides NumPy and CuPy, the module knows array types registered with
:func:`register_array_module`; the test suite registers a *strict* CuPy-like backend
(:mod:`specnorm_np.testing.strict`) that refuses implicit conversion to NumPy, so a stray
``np.`` call on device data fails in CI even without a GPU.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "get_array_module",
    "to_device",
    "to_numpy",
    "gpu_available",
    "register_array_module",
    "device_of",
]

# Extra array types (type -> module), e.g. the strict test backend.
_REGISTERED: dict[type, ModuleType] = {}


def register_array_module(array_type: type, module: ModuleType) -> None:
    """Teach :func:`get_array_module` that arrays of ``array_type`` belong to ``module``."""
    _REGISTERED[array_type] = module


@functools.lru_cache(maxsize=1)
def _cupy() -> ModuleType | None:
    try:
        import cupy  # noqa: F401
    except Exception:  # ImportError, or a CUDA library error at import time
        return None
    return cupy


def get_array_module(*arrays: Any) -> ModuleType:
    """Return the array module (``numpy``, ``cupy`` or a registered one) of the arguments.

    Non-array arguments (Python scalars, ``None``) are ignored. If no argument is an array of a
    known device type, ``numpy`` is returned, as ``cupy.get_array_module`` does.
    """
    for a in arrays:
        if a is None or isinstance(a, np.ndarray):
            continue
        for array_type, module in _REGISTERED.items():
            if isinstance(a, array_type):
                return module
        cp = _cupy()
        if cp is not None and isinstance(a, cp.ndarray):
            return cp
    return np


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True only when CuPy imports *and* a CUDA device can run a kernel."""
    cp = _cupy()
    if cp is None:
        return False
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            return False
        x = cp.arange(4, dtype=cp.float32)
        return float((x * 2).sum()) == 12.0
    except Exception:
        return False


def to_numpy(array: Any) -> np.ndarray:
    """Copy ``array`` to host memory as a ``numpy.ndarray`` (no copy if it already is one)."""
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "get"):  # cupy.ndarray and the strict test backend
        return array.get()
    return np.asarray(array)


def device_of(array: Any) -> str:
    """``"cpu"`` for NumPy arrays, ``"gpu"`` for anything else (CuPy, strict test arrays)."""
    return "cpu" if get_array_module(array) is np else "gpu"


def to_device(array: Any, device: str, *, module: ModuleType | None = None) -> Any:
    """Move ``array`` to ``device`` (``"cpu"`` or ``"gpu"``).

    ``module`` selects the device array module explicitly (the tests pass the strict backend);
    by default ``"gpu"`` means CuPy and requires :func:`gpu_available`.
    """
    if device == "cpu":
        return to_numpy(array)
    if device != "gpu":
        raise ValueError(f"to_device: device must be 'cpu' or 'gpu', got {device!r}")
    if module is None:
        if not gpu_available():
            raise RuntimeError(
                "to_device: no usable GPU (CuPy missing or no CUDA device); "
                "install the 'gpu' extra on a machine with a CUDA device, or stay on 'cpu'"
            )
        module = _cupy()
    if get_array_module(array) is module:
        return array
    return module.asarray(to_numpy(array))
