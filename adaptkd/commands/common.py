"""Shared CLI plumbing: user-facing errors become one message and an exit code from one table."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is (like Ctrl-C), so that a run stops the same clean way."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def run_guarded(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; known errors print ``adaptkd: error: ...`` and exit with their code.

    Ctrl-C (exit 130) and SIGTERM (exit 143) print one line: what was kept, as the interrupted run
    reports it in the exception (a training run names its last checkpoint, or says there is none)."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(func(args) or 0)
    except AdaptkdError as exc:
        print(f"adaptkd: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"adaptkd: {what}; {str(exc) or 'stopped before any run file was written'}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
