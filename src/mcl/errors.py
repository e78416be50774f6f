"""User-facing errors.

Every problem caused by the user's input (a config key, a data file, a run directory) raises a
subclass of :class:`MCLError` with a one-line message that names the file/row/key and says what was
expected. The CLI prints that line and exits with code 2; no traceback unless ``--debug``.
"""

from __future__ import annotations


class MCLError(Exception):
    """Base class of every error the CLI reports as a one-line message (exit code 2)."""

    exit_code = 2


class ConfigError(MCLError):
    """A config key is unknown, has the wrong type, or is out of range."""


class DataError(MCLError):
    """A data set is missing, empty, malformed, or holds an unreadable image."""


class RunDirError(MCLError):
    """A run directory is missing, corrupt, or from another format version."""


class TrainingError(MCLError):
    """Training cannot go on (e.g. the loss became NaN/Inf)."""


class DiskFullError(MCLError):
    """A write failed because the disk (or the user's quota) is full; the old file is left intact."""


def one_line(exc: BaseException) -> str:
    """An exception's message with every run of whitespace (newlines too) collapsed to one space."""
    return " ".join(str(exc).split())
