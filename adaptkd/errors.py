"""Every user-facing error of adaptkd (a leaf module: it imports nothing from the package).

Each class derives from :class:`AdaptkdError` and from the built-in error it has always been (so
``except ValueError`` keeps working); its message names the field, file or value at fault and
what is expected. The command line maps these classes to exit codes in one table
(``adaptkd.commands.common.EXIT_CODES``).
"""

from __future__ import annotations

__all__ = [
    "AdaptkdError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "RunFolderError",
    "NonFiniteError",
    "MissingExtraError",
    "ExportError",
]


class AdaptkdError(Exception):
    """Base of every error adaptkd reports to a user (bad input, unusable files, a failed run)."""


class ConfigError(AdaptkdError, ValueError):
    """A configuration problem, reported before any training starts (names the field and value)."""


class DataError(AdaptkdError, ValueError):
    """A dataset cannot be loaded or built (names the dataset, the file or the argument)."""


class CheckpointError(AdaptkdError, ValueError):
    """A checkpoint file is missing, unreadable or does not fit the network (names the file)."""


class RunFolderError(AdaptkdError, RuntimeError):
    """A run folder cannot be used safely or read (names the folder or the file in it)."""


class NonFiniteError(AdaptkdError, RuntimeError):
    """A loss term, input or output became NaN/Inf; the run stopped and kept its last good state."""


class MissingExtraError(AdaptkdError, ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


class ExportError(AdaptkdError, RuntimeError):
    """The export could not be made or its outputs differ from PyTorch's beyond the tolerance."""
