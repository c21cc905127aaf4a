"""``adaptkd`` command line: ``demo``, ``train``, ``eval``, ``list`` and the commands in
:mod:`adaptkd.commands` (each module there adds one sub-command)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

# One module per sub-command; each defines ``add_parser(subparsers)`` returning its parser with
# ``func`` set to a callable ``(args) -> int``.
COMMAND_MODULES = [
    "adaptkd.commands.demo",
    "adaptkd.commands.compare",
    "adaptkd.commands.train",
    "adaptkd.commands.eval",
    "adaptkd.commands.list",
    "adaptkd.commands.report", "adaptkd.commands.export",
    "adaptkd.commands.bench",
    "adaptkd.commands.cache_teacher",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adaptkd",
        description="Adaptive knowledge distillation: train, evaluate, benchmark, report and export.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # key=value overrides may follow options (`train c.yaml --resume optim.lr=0.1`)
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.version:
        from adaptkd import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from adaptkd.commands.common import run_guarded

    return run_guarded(args.func, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
