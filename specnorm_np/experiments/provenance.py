"""What a result depends on besides its configuration: the code version and the files' safety.

* :func:`code_version`: the git commit of the checkout (informational, recorded with every run)
  and a *fingerprint* of the source files that determine the numbers (layers, ops, spectral
  toolkit, optimizers, trainer, metrics, data loading and preprocessing). Resuming a run from a
  checkpoint written by code with another fingerprint is refused: its first epochs and its last
  ones would come from different code. Edits of the command line, the plots, the summaries, the
  benchmark or the docs leave the fingerprint alone.
* :class:`DirectoryLock`: one ``compare`` at a time per output directory.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["code_version", "DirectoryLock", "DirectoryLocked"]

PACKAGE = Path(__file__).resolve().parent.parent
# paths (relative to the package) whose source does not affect a run's numbers
_NOT_NUMERICS = ("bench/", "testing/", "experiments/", "__main__.py")
_NUMERICS_EXCEPTIONS = ("experiments/datasets.py",)  # preprocessing does


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """``{"commit": str | None, "dirty": bool | None, "fingerprint": str}`` of this checkout.

    ``fingerprint`` is the SHA-256 (first 16 hex digits) of the numerics sources (path and
    contents, in sorted order); ``commit``/``dirty`` come from git when the package lives in a
    git work tree, else None.
    """
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(_NOT_NUMERICS) and relative not in _NUMERICS_EXCEPTIONS:
            continue
        digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    commit, dirty = None, None
    try:
        run = functools.partial(subprocess.run, cwd=PACKAGE, capture_output=True, text=True,
                                timeout=10)
        head = run(["git", "rev-parse", "HEAD"])
        if head.returncode == 0:
            commit = head.stdout.strip()
            status = run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."])
            dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"commit": commit, "dirty": dirty, "fingerprint": digest.hexdigest()[:16]}


class DirectoryLocked(RuntimeError):
    """Another process holds the lock of an output directory."""


class DirectoryLock:
    """An exclusive, non-blocking lock on ``directory`` (a ``.lock`` file, ``flock``).

    The operating system releases it when the holder exits, even after ``kill -9``, so a crashed
    ``compare`` never leaves a stale lock. Use as a context manager.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / ".lock"
        self._handle: Any = None

    def __enter__(self) -> DirectoryLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DirectoryLocked(
                f"{self.path.parent}: another compare is using this output directory "
                f"({holder}); wait for it to finish, or use another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.close()  # closing releases the flock
            self._handle = None
