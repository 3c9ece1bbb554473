"""Atomic checkpoints: nested state (arrays + plain values) in one ``.npz`` file.

A checkpoint is any nesting of dicts, lists and tuples whose leaves are NumPy arrays or
JSON-able values (numbers, strings, booleans, None; Python's arbitrary-size ints keep a
generator's state exact). :func:`save_checkpoint` stores every array as an ``.npz`` member and
everything else as one JSON document (member ``__meta__``, in which each array is replaced by a
reference to its member). The file is written to a temporary name in the same directory, flushed
to disk and then renamed over the old one with :func:`os.replace`, so a crash at any moment leaves
either the previous checkpoint or the new one, never a half-written file. Loading uses
``allow_pickle=False``: a checkpoint cannot run code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from specnorm_np._files import write_atomically
from specnorm_np.backend import to_numpy

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint"]

_META = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not in the expected format."""


def _encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Replace arrays by ``{"__array__": member}`` and make everything else JSON-able."""
    if hasattr(value, "shape") and hasattr(value, "dtype") and getattr(value, "ndim", 0) > 0:
        member = f"a{len(arrays)}"
        arrays[member] = to_numpy(value)
        return {"__array__": member}
    if isinstance(value, np.generic) or (hasattr(value, "dtype") and hasattr(value, "item")):
        return value.item()
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v, arrays) for k, v in value.items()}
        return {"__items__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in value]}
    if isinstance(value, list):
        return [_encode(v, arrays) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"save_checkpoint: cannot store a value of type {type(value).__name__}")


def _decode(value: Any, archive: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return np.array(archive[value["__array__"]])
        if set(value) == {"__items__"}:
            return {_decode(k, archive): _decode(v, archive) for k, v in value["__items__"]}
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v, archive) for v in value["__tuple__"])
        return {k: _decode(v, archive) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, archive) for v in value]
    return value


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, then ``os.replace``).

    Returns the path written. Raises ``TypeError`` for a leaf that is neither an array nor a
    JSON-able value.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    meta = json.dumps(_encode(state, arrays))
    write_atomically(path, lambda handle: np.savez(handle, **arrays,
                                                   **{_META: np.array(meta)}))
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        When the file does not exist or is not a readable checkpoint (naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if _META not in archive.files:
                raise CheckpointError(f"checkpoint {path}: no {_META} member; not a checkpoint")
            meta = json.loads(str(archive[_META]))
            return _decode(meta, archive)
    except CheckpointError:
        raise
    except Exception as error:  # zipfile.BadZipFile, OSError, ValueError, JSONDecodeError
        raise CheckpointError(f"checkpoint {path}: unreadable ({error})") from error
