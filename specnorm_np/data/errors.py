"""Errors raised by the data package.

Every data problem raises a :class:`DatasetError`, a ``ValueError`` whose message names the file
or argument, what was expected and what was found, and, where it helps, what to do next.
"""

from __future__ import annotations

__all__ = ["DatasetError", "UnsafePickleError", "ChecksumError", "DownloadError"]


class DatasetError(ValueError):
    """A data file, folder, archive or argument is missing, malformed or out of range."""


class UnsafePickleError(DatasetError):
    """A pickle asked for a global (a function or class) outside the CIFAR-10 format."""


class ChecksumError(DatasetError):
    """A file's size or MD5 differs from the expected one."""


class DownloadError(DatasetError):
    """A download failed or was interrupted; no partial file is left behind."""
