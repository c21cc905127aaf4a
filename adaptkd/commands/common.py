"""Shared CLI plumbing: user-facing errors become one message and an exit code from one table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from adaptkd.errors import AdaptkdError, ExportError, NonFiniteError

__all__ = ["EXIT_CODES", "exit_code", "run_guarded", "user_errors"]

#: exit code of each error class (the first class in this order that the error is an instance of):
#: 1 an export that failed its parity check, 3 a run that stopped on a fault, 2 any other bad input.
EXIT_CODES: tuple[tuple[type[AdaptkdError], int], ...] = ((ExportError, 1), (NonFiniteError, 3), (AdaptkdError, 2))


def user_errors() -> tuple[type[BaseException], ...]:
    """The error classes a command reports as one ``adaptkd: error: ...`` line (no traceback)."""
    return (AdaptkdError,)


def exit_code(exc: AdaptkdError) -> int:
    return next(code for cls, code in EXIT_CODES if isinstance(exc, cls))


def run_guarded(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; known errors print ``adaptkd: error: ...`` and exit with their code."""
    try:
        return int(func(args) or 0)
    except AdaptkdError as exc:
        print(f"adaptkd: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("adaptkd: interrupted; the last checkpoint (the last completed epoch, or the last "
              "run.checkpoint_every_steps step) is in last.pt (resume with --resume)", file=sys.stderr)
        return 130
