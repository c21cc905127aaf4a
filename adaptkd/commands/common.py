"""Shared CLI plumbing: user-facing errors become one message and a non-zero exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

__all__ = ["run_guarded", "user_errors"]


def user_errors() -> tuple[type[BaseException], ...]:
    from adaptkd.config import ConfigError
    from adaptkd.data import DataError
    from adaptkd.engine.checkpoint import CheckpointError
    from adaptkd.engine.networks import MissingExtraError
    from adaptkd.engine.trainer import NonFiniteError, RunFolderError

    return (ConfigError, DataError, CheckpointError, NonFiniteError, RunFolderError, MissingExtraError)


def run_guarded(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; known errors print ``adaptkd: error: ...`` and exit 2 (bad input) or 3 (run fault)."""
    from adaptkd.engine.trainer import NonFiniteError

    try:
        return int(func(args) or 0)
    except user_errors() as exc:
        print(f"adaptkd: error: {exc}", file=sys.stderr)
        return 3 if isinstance(exc, NonFiniteError) else 2
    except KeyboardInterrupt:
        print("adaptkd: interrupted; the last completed epoch is in last.pt (resume with --resume)", file=sys.stderr)
        return 130
