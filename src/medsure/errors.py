"""Exceptions raised by medsure.

Every validation failure raises :class:`MedsureInputError` with a message that names the
offending value and what was expected. The CLI turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations


class MedsureError(Exception):
    """Base class of all medsure errors."""


class MedsureInputError(MedsureError, ValueError):
    """Bad user input: wrong shape, range, type, missing file or too few samples."""


class DataUnavailableError(MedsureError, FileNotFoundError):
    """A dataset file is missing and cannot be downloaded (e.g. offline)."""


class ChecksumError(MedsureError):
    """A file's MD5 differs from the official one."""
