"""Scratch arrays reused between calls, in a form that cannot hand back stale numbers.

A training step runs the same convolutions on the same shapes again and again; allocating their
big scratch arrays (patch matrices, padded inputs, dilated gradients) anew every time costs page
faults and memory bandwidth. A :class:`Workspace` keeps them by name. It offers two kinds of
array, and neither lets old contents leak into a result:

* :meth:`Workspace.empty`: an array the caller overwrites *entirely* (the ``out=`` of a matrix
  product or of im2col). Like ``xp.empty``, its old contents never matter.
* :meth:`Workspace.zeros_with`: zero everywhere except a region, into which the workspace itself
  writes the given values. The array remembers the region it holds; reused for the same region,
  only that region is rewritten (everything else is still zero); for another region, it is
  cleared first. Correctness depends on nothing the caller has to remember.

Arrays are sized for ``capacity`` items along the first axis (e.g. the images of a batch chunk)
and the first ``m`` are handed out, so a short last chunk reuses the same memory.
"""

from __future__ import annotations

from typing import Any

from specnorm_np.backend import get_array_module

__all__ = ["Workspace"]


def _check_region(region: tuple[slice, ...], shape: tuple[int, ...]) -> None:
    if len(region) != len(shape) - 1 or not all(isinstance(s, slice) for s in region):
        raise ValueError(
            f"Workspace.zeros_with: region must be {len(shape) - 1} slices (one per axis after "
            f"the first), got {region!r}"
        )


class Workspace:
    """Named scratch arrays, kept between calls (see the module docstring).

    ``Workspace()`` is also the right thing for a single call: every array is then fresh.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, tuple[tuple, Any]] = {}

    def arrays(self) -> dict[str, Any]:
        """The arrays held, by name (for inspection: memory, dtypes)."""
        return {name: array for name, (_, array) in self._arrays.items()}

    def clear(self) -> None:
        """Forget every array (e.g. after a move to another device or dtype)."""
        self._arrays.clear()

    def _lookup(self, name: str, key: tuple, like: Any) -> Any:
        """The array kept under ``name`` if it was made for ``key``, of ``like``'s array type.

        (The array type, hence the device, is checked on the array rather than kept in the key,
        so that a model holding a workspace can still be deep-copied and pickled.)
        """
        found = self._arrays.get(name)
        if found is not None and found[0] == key and (
                type(found[1]) is type(like)
                or get_array_module(found[1]) is get_array_module(like)):  # e.g. a memmap
            return found[1]
        return None

    def empty(self, name: str, shape: tuple[int, ...], dtype: Any, like: Any) -> Any:
        """An array of ``shape`` and ``dtype`` on ``like``'s device, with arbitrary contents.

        The caller must overwrite every entry it reads (an ``out=`` argument does).
        """
        key = ("empty", tuple(shape), dtype)
        array = self._lookup(name, key, like)
        if array is None:
            xp = get_array_module(like)
            array = xp.empty(tuple(int(s) for s in shape), dtype=dtype)
            self._arrays[name] = (key, array)
        return array

    def zeros_with(self, name: str, shape: tuple[int, ...], region: tuple[slice, ...],
                   values: Any) -> Any:
        """``out[:m]`` of an array ``out`` of ``shape`` that is zero except ``out[:m][:, *region]
        = values`` (m = ``len(values)`` ≤ ``shape[0]``; dtype and device are those of values).

        ``region`` holds one slice per axis after the first, e.g. the interior of a padded image
        ``(slice(ph, ph + H), slice(pw, pw + W), slice(None))``.
        """
        # the key holds each slice as (start, stop, step): another spelling of the same region
        # only costs one clearing, never a wrong result
        key = ("zeros_with", tuple(shape), values.dtype,
               tuple([(s.start, s.stop, s.step) for s in region]))
        array = self._lookup(name, key, values)
        if array is None:  # a new region (or size): start from zeros
            _check_region(region, shape)
            xp = get_array_module(values)
            array = xp.zeros(tuple(int(s) for s in shape), dtype=values.dtype)
            self._arrays[name] = (key, array)
        out = array[: values.shape[0]]
        out[(slice(None), *region)] = values
        return out
