"""Restricted unpickling for the CIFAR-10 python batches.

A pickle is a small program: its ``GLOBAL`` / ``STACK_GLOBAL`` opcodes import any callable by
name and ``REDUCE`` calls it, so ``pickle.load`` on a tampered file can run ``os.system``.
:class:`RestrictedUnpickler` overrides :meth:`pickle.Unpickler.find_class`, the single place where
those names are resolved, and admits only what a CIFAR-10 batch contains:

* dicts, lists, ints, bytes and str need no global at all (they have their own opcodes);
* NumPy arrays pickle as ``numpy.core.multiarray._reconstruct`` (``numpy._core`` since
  NumPy 2) applied to ``numpy.ndarray``, a ``numpy.dtype`` and raw bytes; protocol-5 pickles
  written by NumPy use ``numpy._core.numeric._frombuffer`` instead;
* Python 3 writes ``bytes`` into protocol-2 pickles as ``_codecs.encode(text, "latin1")``.

Everything else, ``builtins.eval``, ``os.system``, ``subprocess.Popen`` included, raises
:class:`~specnorm_np.data.errors.UnsafePickleError` before anything is called. Dtypes are further
restricted to non-object ones, since an object array would be filled with arbitrary objects.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np

from specnorm_np.data.errors import DatasetError, UnsafePickleError

__all__ = ["RestrictedUnpickler", "safe_load", "safe_loads", "ALLOWED_GLOBALS"]


def _numpy_function(module_names: tuple[str, ...], name: str) -> Callable[..., Any]:
    """Find ``name`` in the first importable NumPy module of ``module_names``.

    Resolved here rather than by importing the module named in the pickle, so that old names
    (``numpy.core``) map to their NumPy 2 home without deprecation warnings.
    """
    import importlib

    for module_name in module_names:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    raise ImportError(f"none of {module_names} provides {name}")  # pragma: no cover


def _safe_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    """``numpy.dtype`` as the pickle calls it, refusing object dtypes."""
    dtype = np.dtype(spec, align=bool(align), copy=bool(copy))
    if dtype.hasobject:
        raise UnsafePickleError(f"the pickle asks for an object array (dtype {dtype!r})")
    return dtype


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` limited to what protocol-2 ``bytes`` use: a str and latin-1."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise UnsafePickleError(
            f"_codecs.encode is admitted only as (str, 'latin1'), got "
            f"({type(text).__name__}, {encoding!r})"
        )
    return text.encode("latin1")


_RECONSTRUCT = ("numpy._core.multiarray", "numpy.core.multiarray")
_FROMBUFFER = ("numpy._core.numeric", "numpy.core.numeric")

#: ``(module, name)`` pairs a CIFAR-10 pickle may name, mapped to what they resolve to. Functions
#: are looked up lazily (``None`` here), the rest are the objects themselves.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): None,
    ("numpy._core.multiarray", "_reconstruct"): None,
    ("numpy.core.numeric", "_frombuffer"): None,
    ("numpy._core.numeric", "_frombuffer"): None,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that resolves only :data:`ALLOWED_GLOBALS`.

    Parameters
    ----------
    file : binary file object
    source : str
        Name of the file, used in error messages.
    """

    def __init__(self, file: Any, *, source: str = "<pickle>") -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self.source}: refused to load: the pickle asks for '{module}.{name}', which a "
                "CIFAR-10 batch never contains (only NumPy arrays, dicts, lists, bytes, str and "
                "ints are admitted). The file may have been tampered with; do not load it with "
                "pickle.load. Delete it and download the data again."
            )
        target = ALLOWED_GLOBALS[key]
        if target is None:
            modules = _RECONSTRUCT if name == "_reconstruct" else _FROMBUFFER
            target = _numpy_function(modules, name)
        return target


def safe_loads(data: bytes, *, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (``encoding="bytes"``)."""
    return _load(io.BytesIO(data), source, len(data))


def safe_load(path: str | os.PathLike[str]) -> Any:
    """Unpickle the file at ``path`` with :class:`RestrictedUnpickler`.

    Raises
    ------
    UnsafePickleError
        The pickle names a global outside :data:`ALLOWED_GLOBALS` (nothing was called).
    DatasetError
        The file is truncated or is not a valid pickle; the message names the file.
    """
    with open(path, "rb") as handle:
        return _load(handle, os.fspath(path), os.fstat(handle.fileno()).st_size)


def _load(handle: Any, source: str, size: int) -> Any:
    try:
        return RestrictedUnpickler(handle, source=source).load()
    except DatasetError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError,
            KeyError, AttributeError, OverflowError, MemoryError) as error:
        raise DatasetError(
            f"{source}: not a readable CIFAR-10 pickle ({size} bytes); it is probably truncated "
            f"or corrupt ({type(error).__name__}: {error}). Delete it and download or copy the "
            "data again."
        ) from error
