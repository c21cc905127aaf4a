"""``adaptkd compare RECIPE`` — every method × seed of a recipe, one report with confidence intervals.

Trains (or reuses) the recipe's teachers once, then every method for every seed (``--jobs N``
processes at a time), and writes ``<out>/compare.md`` and ``<out>/compare.json``: the final-epoch
test top-1 per method (mean ± std over seeds; test top-1 at the best validation epoch too where
the recipe holds out a validation split), the paired per-seed differences against ``ce`` and
against each method's ``baseline`` with 95 % t-intervals, and a verdict per comparison; then the
report card of the teachers and of every run in ``<out>/report`` (seeds as mean ± std). Run it again
to resume: finished runs are reused and a half-finished one continues from its ``last.pt``.
The recipe format is described in :mod:`adaptkd.compare` and ``docs/compare.md``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="run every method x seed of a recipe; report means, paired differences "
                       "and 95%% intervals", description=__doc__)
    p.add_argument("recipe", help="recipe YAML (common / teacher / student / seeds / methods)")
    add_options(p, default_out=None)
    p.set_defaults(func=run)
    return p


def add_options(p: argparse.ArgumentParser, default_out: str | None) -> None:
    """Options shared with ``adaptkd demo``."""
    p.add_argument("--out", default=default_out,
                   help="output folder (default: runs/<recipe name>)" if default_out is None
                   else f"output folder (default {default_out})")
    p.add_argument("--jobs", type=int, default=1, help="training processes at a time (default 1)")
    p.add_argument("--methods", default=None, help="only these method labels, comma-separated")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 for every method (instead of the recipe's)")
    p.add_argument("--quick", action="store_true", help="a few steps per run only (smoke test)")
    p.add_argument("--no-report", action="store_true", help="skip the report card (tables only)")
    p.add_argument("--no-train", action="store_true",
                   help="train nothing: report the runs already finished and list the missing ones")
    p.add_argument("--overwrite", action="store_true",
                   help="replace runs in --out made with another config (refused without it: a finished "
                        "comparison is never lost; runs made with the same config are reused either way)")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every run (e.g. optim.epochs=5)")


def run(args: argparse.Namespace) -> int:
    from adaptkd.compare import read_recipe

    recipe = read_recipe(args.recipe)
    out = Path(args.out or Path("runs") / Path(args.recipe).stem)
    title = f"adaptkd compare: {Path(args.recipe).name}"
    return compare(recipe, out, args, title, "adaptkd compare " + " ".join(shlex.quote(a) for a in sys.argv[2:]))


def refuse_replacing_runs(specs: list[Any], out: Path, *, overwrite: bool) -> None:
    """Refuse to retrain over runs of another config (e.g. ``--quick`` over a full comparison)
    unless ``--overwrite``; reused and resumed runs are never at risk."""
    from adaptkd.compare import run_state
    from adaptkd.errors import RunFolderError

    clobbered = [str(s.out) for s in specs
                 if run_state(s) == "new" and ((s.out / "last.pt").exists() or (s.out / "summary.json").exists())]
    if clobbered and not overwrite:
        shown = ", ".join(clobbered[:3]) + (f" and {len(clobbered) - 3} more" if len(clobbered) > 3 else "")
        raise RunFolderError(f"--out {str(out)!r} holds runs made with another config ({shown}); pass --overwrite "
                             "to replace them, or choose another --out")


def compare(recipe: dict[str, Any], out: Path, args: argparse.Namespace, title: str, command: str | None) -> int:
    from adaptkd.compare import (
        execute,
        finished_only,
        plan,
        report_runs,
        summarize,
        terminal_table,
        write_outputs,
    )
    from adaptkd.config import ConfigError

    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    quick = ["optim.epochs=1", "run.max_steps_per_epoch=3", "run.latency=false"] if args.quick else []
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    p = plan(recipe, out, quick + list(args.overrides), methods=methods, seeds=args.seeds)
    if not args.no_train:  # (reporting finished runs replaces nothing)
        refuse_replacing_runs(p.teachers + p.students, out, overwrite=getattr(args, "overwrite", False))
    t0 = time.perf_counter()
    print(f"{len(p.teachers)} teacher(s), {len(p.students)} student run(s) in {out}/")
    if args.no_train:
        p, results = finished_only(p)
    else:
        results = execute(p.teachers, jobs=args.jobs)
        results.update(execute(p.students, jobs=args.jobs))
    summary = summarize(p, results)
    elapsed = time.perf_counter() - t0
    md = write_outputs(summary, out, title, command)
    from rich.console import Console

    Console().print(terminal_table(summary, title))
    print(f"finished in {elapsed:.0f}s; runs in {out}/; table, intervals and verdicts: {md}")
    if not args.no_report:
        from adaptkd.report import build_report

        rep = build_report(report_runs(summary), out / "report", title=title)
        print(f"report card (accuracy, size, latency, agreement, curves, signals): {rep.html}")
        print(f"  text version: {rep.markdown}")
    return 0
