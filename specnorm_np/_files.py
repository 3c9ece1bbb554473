"""Files that are never half-written: atomic replacement and the clean-up after a crash.

:func:`write_atomically` writes to a unique temporary name in the target's own directory, flushes
it to disk and renames it over the target (:func:`os.replace`), so a reader or a crash sees the old
file or the new one, never a mixture, and two writers never share a temporary.
:func:`remove_stale_temporaries` deletes what a killed process (``kill -9``) left behind.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomically", "remove_stale_temporaries", "temporary_name"]

_TEMPORARY_MARK = ".tmp-"


def temporary_name(path: Path) -> Path:
    """A unique temporary beside ``path``: ``.<name>.tmp-<pid>-<random>``."""
    return path.with_name(f".{path.name}{_TEMPORARY_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def write_atomically(path: str | os.PathLike[str],
                     data: bytes | str | Callable[[BinaryIO], object]) -> Path:
    """Write ``data`` to ``path`` through a unique temporary file in the same directory.

    ``data`` is bytes, text (UTF-8) or a function that writes into the open binary file (e.g.
    ``lambda f: numpy.savez(f, ...)``). The temporary is flushed to disk and renamed over
    ``path`` (:func:`os.replace`), so readers see the old file or the new one, never a mixture;
    concurrent writers never share a name; on an error the temporary is removed and the old
    file is left as it was.
    """
    path = Path(path)
    temporary = temporary_name(path)
    try:
        with open(temporary, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries of :func:`write_atomically` / checkpoints in ``directory``.

    Call it only while no writer is active (``compare`` holds the output directory's
    :class:`~specnorm_np.experiments.provenance.DirectoryLock`).
    Returns the removed paths.
    """
    removed = []
    for path in Path(directory).glob(f".*{_TEMPORARY_MARK}*"):
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed
