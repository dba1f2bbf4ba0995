"""Exceptions raised by pyhf_dask.

Every error that a user can cause with bad input derives from :class:`PyhfDaskError`,
so the command line can print one clear line for it instead of a traceback.
"""

from __future__ import annotations

__all__ = [
    "InputError",
    "InputLimit",
    "InvalidArchive",
    "InvalidGrid",
    "InvalidJSON",
    "InvalidOption",
    "InvalidPatch",
    "InvalidWorkspace",
    "MissingDependency",
    "NoUsableResults",
    "OutputError",
    "PyhfDaskError",
    "SettingsMismatch",
    "StoreLocked",
    "VersionMismatch",
]


class PyhfDaskError(Exception):
    """Base class of all pyhf_dask errors."""


class InputError(PyhfDaskError, ValueError):
    """Bad user input: a file, an option or a grid that cannot be used."""

    #: Short category name printed by the CLI in front of the message.
    category = "input"


class InvalidJSON(InputError):
    """A file is missing, unreadable or not valid JSON."""

    category = "json"


class InvalidWorkspace(InputError):
    """A background-only workspace fails pyhf's schema or holds unusable numbers."""

    category = "workspace"


class InvalidPatch(InputError):
    """A patch or patchset cannot be read, does not match, or does not apply."""

    category = "patch"


class InvalidArchive(InputError):
    """An archive or folder does not hold what a scan needs, or holds unsafe paths."""

    category = "archive"


class InvalidGrid(InputError):
    """The signal grid is empty, has duplicate points or unparsable coordinates."""

    category = "grid"


class InvalidOption(InputError):
    """An option has a value that is not allowed."""

    category = "option"


class NoUsableResults(InvalidOption):
    """A result has too few fitted points for what was asked (every fit failed, or the
    points are still pending in an interrupted store)."""

    category = "results"


class SettingsMismatch(InputError):
    """A result store was made with other inputs or settings than the ones given."""

    category = "resume"


class InputLimit(InputError):
    """An input is larger or deeper than a limit (file size, JSON nesting, bins)."""

    category = "limit"


class StoreLocked(InputError):
    """A result store is in use by another scan (or its lock was left by a dead one)."""

    category = "lock"


class OutputError(PyhfDaskError):
    """An output cannot be written (checked before any fit, and at the final write)."""

    category = "output"


class VersionMismatch(PyhfDaskError):
    """Client and workers run different versions of pyhf_dask or pyhf."""

    category = "version"


class MissingDependency(PyhfDaskError, ImportError):
    """An optional dependency is not installed; the message names the extra."""

    category = "dependency"
