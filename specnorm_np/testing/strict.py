"""A strict, CuPy-like array backend for testing device-agnostic code without a GPU.

``StrictArray`` wraps a host ``numpy.ndarray`` but behaves like ``cupy.ndarray`` where it
matters for portability:

* it is **not** a ``numpy.ndarray`` subclass;
* ``numpy.asarray(x)`` (any implicit conversion to NumPy) raises ``TypeError``;
* NumPy functions and ufuncs called on it raise ``TypeError`` (``np.exp(x)`` fails as it would
  for a CuPy array in old NumPy versions, and is a bug in device-agnostic code);
* mixing a host ``numpy.ndarray`` into its operations (``x + np_array``, ``x[np_index]``,
  ``xp.maximum(x, np_array)``) raises ``TypeError``;
* reductions return 0-d arrays, as CuPy does.

The module object :data:`xp` mirrors the NumPy namespace (``xp.zeros``, ``xp.random``,
``xp.lib.stride_tricks.as_strided``, ...), unwrapping ``StrictArray`` arguments and wrapping
array results. Explicit transfers are allowed: ``xp.asarray(host_array)`` (like
``cupy.asarray``) and ``x.get()`` (like ``cupy.ndarray.get``).

Use it by moving a model with ``model.to("gpu", module=strict.xp)`` or data with
``strict.asarray(host)``; :func:`specnorm_np.backend.get_array_module` returns :data:`xp` for
``StrictArray`` inputs.
"""

from __future__ import annotations

import operator
import types
from typing import Any

import numpy as np

from specnorm_np.backend import register_array_module

__all__ = ["StrictArray", "StrictBackendError", "xp", "asarray"]


class StrictBackendError(TypeError):
    """A host NumPy array met a strict (device-like) array, or an implicit conversion."""


_EXPLICIT_TRANSFER = {"asarray", "array", "asanyarray", "ascontiguousarray"}


def _unwrap(obj: Any) -> Any:
    if isinstance(obj, StrictArray):
        return obj._a
    if isinstance(obj, np.ndarray):
        raise StrictBackendError(
            f"host numpy.ndarray of shape {obj.shape} mixed into a strict-backend (device) "
            "operation; a CuPy run would fail here. Create it with the data's array module "
            "(xp = get_array_module(x)) instead of numpy."
        )
    if isinstance(obj, tuple):
        return tuple(_unwrap(o) for o in obj)
    if isinstance(obj, list):
        return [_unwrap(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


def _wrap(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return StrictArray(obj)
    if isinstance(obj, np.generic) and not isinstance(obj, (np.str_, np.bytes_)):
        return StrictArray(np.asarray(obj))  # CuPy reductions return 0-d arrays
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    if isinstance(obj, np.random.Generator):
        return _Proxy(obj, "random.Generator")
    return obj


class _Proxy:
    """Wraps a NumPy module, function, ufunc or object so that arrays in and out are strict."""

    def __init__(self, target: Any, name: str, explicit_transfer: bool = False) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_explicit", explicit_transfer)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._explicit and args and isinstance(args[0], np.ndarray):
            args = (args[0].copy(),) + tuple(_unwrap(a) for a in args[1:])
        else:
            args = _unwrap(args)
        return _wrap(self._target(*args, **_unwrap(kwargs)))

    def __getattr__(self, name: str) -> Any:
        if name == "ndarray":
            return StrictArray
        attr = getattr(self._target, name)
        if isinstance(attr, (type, np.dtype, int, float, complex, str, bool)) or attr is None:
            return attr
        if isinstance(attr, np.ndarray):
            return StrictArray(attr)
        if callable(attr) or isinstance(attr, types.ModuleType):
            return _Proxy(attr, f"{self._name}.{name}", name in _EXPLICIT_TRANSFER)
        return attr

    def __repr__(self) -> str:
        return f"<strict proxy of {self._name}>"


def _binary(op: Any, reflected: bool = False) -> Any:
    def method(self: StrictArray, other: Any) -> Any:
        o = _unwrap(other)
        return _wrap(op(o, self._a) if reflected else op(self._a, o))

    return method


def _inplace(op: Any) -> Any:
    def method(self: StrictArray, other: Any) -> StrictArray:
        self._a = op(self._a, _unwrap(other))
        return self

    return method


class StrictArray:
    """A device-like array: NumPy storage, CuPy rules (see the module docstring)."""

    __slots__ = ("_a",)
    __array_ufunc__ = None  # ndarray (op) StrictArray -> NotImplemented -> our reflected op
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, array: np.ndarray) -> None:
        self._a = array

    # ---- explicit and forbidden conversions -------------------------------------------------
    def get(self) -> np.ndarray:
        """Copy to host, like ``cupy.ndarray.get()``."""
        return self._a.copy()

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise StrictBackendError(
            "implicit conversion of a strict-backend (device) array to numpy.ndarray is not "
            "allowed, as with cupy.ndarray; use .get() or specnorm_np.backend.to_numpy()"
        )

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raise StrictBackendError(
            f"numpy.{func.__name__} called on a strict-backend (device) array; use the array "
            "module of the data (xp = get_array_module(x)) instead of numpy"
        )

    # ---- attributes -------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    T = property(lambda self: StrictArray(self._a.T))

    @property
    def flags(self) -> Any:
        return self._a.flags

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):
            return _Proxy(attr, f"ndarray.{name}")
        return _wrap(attr)

    # ---- indexing ---------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._a[_unwrap(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_unwrap(key)] = _unwrap(value)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Any:
        for row in self._a:
            yield _wrap(row)

    # ---- scalars (CuPy allows these for size-1 arrays; they synchronise) ---------------------
    def __bool__(self) -> bool:
        return bool(self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __index__(self) -> int:
        return operator.index(self._a)

    def __complex__(self) -> complex:
        return complex(self._a)

    def __repr__(self) -> str:
        return "StrictArray(" + repr(self._a)[6:]

    # ---- arithmetic -------------------------------------------------------------------------
    __add__, __radd__ = _binary(operator.add), _binary(operator.add, True)
    __sub__, __rsub__ = _binary(operator.sub), _binary(operator.sub, True)
    __mul__, __rmul__ = _binary(operator.mul), _binary(operator.mul, True)
    __truediv__, __rtruediv__ = _binary(operator.truediv), _binary(operator.truediv, True)
    __floordiv__, __rfloordiv__ = _binary(operator.floordiv), _binary(operator.floordiv, True)
    __mod__, __rmod__ = _binary(operator.mod), _binary(operator.mod, True)
    __pow__, __rpow__ = _binary(operator.pow), _binary(operator.pow, True)
    __matmul__, __rmatmul__ = _binary(operator.matmul), _binary(operator.matmul, True)
    __and__, __rand__ = _binary(operator.and_), _binary(operator.and_, True)
    __or__, __ror__ = _binary(operator.or_), _binary(operator.or_, True)
    __xor__, __rxor__ = _binary(operator.xor), _binary(operator.xor, True)
    __lt__, __le__ = _binary(operator.lt), _binary(operator.le)
    __gt__, __ge__ = _binary(operator.gt), _binary(operator.ge)
    __eq__, __ne__ = _binary(operator.eq), _binary(operator.ne)  # type: ignore[assignment]
    __iadd__, __isub__ = _inplace(operator.iadd), _inplace(operator.isub)
    __imul__, __itruediv__ = _inplace(operator.imul), _inplace(operator.itruediv)
    __ipow__, __imatmul__ = _inplace(operator.ipow), _inplace(operator.imatmul)

    def __neg__(self) -> StrictArray:
        return StrictArray(-self._a)

    def __pos__(self) -> StrictArray:
        return StrictArray(+self._a)

    def __abs__(self) -> StrictArray:
        return StrictArray(abs(self._a))

    def __invert__(self) -> StrictArray:
        return StrictArray(~self._a)


xp = _Proxy(np, "strict")
"""The strict backend's array module (mirrors ``numpy``)."""


def asarray(host: Any, dtype: Any = None) -> StrictArray:
    """Copy a host array (or array-like) onto the strict 'device'."""
    return StrictArray(np.array(host, dtype=dtype, copy=True))


register_array_module(StrictArray, xp)  # type: ignore[arg-type]
