"""Argument checks shared by the whole library: one wording for every error.

Every check raises (``ValueError`` by default; the data package passes its
:class:`~specnorm_np.data.DatasetError`, itself a ``ValueError``) with the message::

    "<owner>: <name> must be <what was expected>, got <what came>"

so that an error names the layer or function it comes from, the argument, the expectation and
the value. Each check returns the value in its plain Python form (``int``, ``float``,
``(int, int)``, ``numpy.dtype``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "check_int",
    "check_number",
    "check_choice",
    "as_pair",
    "check_float_dtype",
]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _interval(minimum: Any, maximum: Any, open_low: bool, open_high: bool) -> str:
    """Human wording of a range: ">= 1", "> 0", "in [0, 1)", or "" for none."""
    if minimum is not None and maximum is not None:
        return f"in {'(' if open_low else '['}{minimum}, {maximum}{')' if open_high else ']'}"
    if minimum is not None:
        return f"{'>' if open_low else '>='} {minimum}"
    if maximum is not None:
        return f"{'<' if open_high else '<='} {maximum}"
    return ""


def _fail(error: type[Exception], owner: str, name: str, expected: str, value: Any) -> Exception:
    return error(f"{owner}: {name} must be {expected}, got {value!r}")


def check_int(value: Any, name: str, owner: str, *, minimum: int | None = None,
              maximum: int | None = None, error: type[Exception] = ValueError) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) in ``[minimum, maximum]``.

    Python and NumPy integers are accepted; floats (even ``2.0``), bools and strings are not.
    """
    if not _is_int(value) or (minimum is not None and value < minimum) \
            or (maximum is not None and value > maximum):
        expected = " ".join(filter(None, ("an int", _interval(minimum, maximum, False, False))))
        raise _fail(error, owner, name, expected, value)
    return int(value)


def check_number(value: Any, name: str, owner: str, *, minimum: float | None = None,
                 maximum: float | None = None, open_low: bool = False, open_high: bool = False,
                 error: type[Exception] = ValueError) -> float:
    """``value`` as a ``float`` if it is a finite real number in the given range.

    ``open_low`` / ``open_high`` exclude the bounds (``minimum=0, open_low=True`` is "> 0").
    NaN, ±Inf, bools, strings and arrays are refused.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) \
        and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if open_low else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if open_high else value <= maximum
    if not ok:
        wording = _interval(minimum, maximum, open_low, open_high)
        raise _fail(error, owner, name, " ".join(filter(None, ("a finite number", wording))),
                    value)
    return float(value)


def check_choice(value: Any, name: str, owner: str, choices: Iterable[Any], *,
                 error: type[Exception] = ValueError) -> Any:
    """``value`` if it is one of ``choices``, else an error listing them."""
    choices = tuple(choices)
    for choice in choices:  # (a loop, not any(...): this runs in every forward pass)
        if type(value) is type(choice) and value == choice:
            return value
    listed = ", ".join(repr(c) for c in choices)
    raise _fail(error, owner, name, f"one of {listed}", value)


def as_pair(value: Any, name: str, owner: str, minimum: int) -> tuple[int, int]:
    """``3 -> (3, 3)``; a pair stays a pair; each entry must be an int ``>= minimum``.

    Used for kernel sizes, strides and paddings; floats and bools are refused.
    """
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(_is_int(v) and v >= minimum for v in items):
        raise _fail(ValueError, owner, name,
                    f"an int >= {minimum} or a pair of such ints", value)
    return int(items[0]), int(items[1])


def check_float_dtype(dtype: Any, owner: str, name: str = "dtype") -> np.dtype:
    """``numpy.dtype(dtype)`` if it is a floating-point type (float16/32/64), else an error.

    Layers hold float parameters only: an integer weight would silently truncate every update.
    """
    try:  # (numpy.dtype(None) would be float64: None is refused instead)
        resolved = None if dtype is None else np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or resolved.kind != "f":
        raise _fail(ValueError, owner, name, "a floating-point dtype such as numpy.float32",
                    dtype)
    return resolved
