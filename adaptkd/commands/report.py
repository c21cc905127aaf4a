"""``adaptkd report RUN [RUN ...] [--out DIR]`` — the report card of a run, or a comparison of runs.

Writes ``report.html`` (self-contained; PNG figures beside it), ``report.md`` and ``report.json``
to ``<run>/report`` (one run) or ``--out`` (required for several runs), and prints the same
tables and figures (as sparklines) on the terminal.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="HTML + Markdown report card of one run or a comparison of runs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s)")
    p.add_argument("--out", help="output folder (default <run>/report; required for several runs)")
    p.add_argument("--which", choices=["best", "last"], default="best",
                   help="checkpoint the learners are re-evaluated from (default best, what export ships)")
    p.add_argument("--no-eval", action="store_true",
                   help="do not re-evaluate the networks (no per-class accuracy or agreement; "
                        "accuracy from summary.json)")
    p.add_argument("--measure", choices=["auto", "missing", "all", "none"], default="auto",
                   help="CPU latency/throughput: measure what a run did not record (missing), re-measure every "
                        "model now so the rows are comparable (all), or neither (none); auto (default): all for "
                        "several runs, missing for one")
    p.add_argument("--no-measure", action="store_const", dest="measure", const="none", help="same as --measure none")
    p.add_argument("--device", default="cpu", help="device for the re-evaluation (default cpu)")
    p.add_argument("--threads", type=int, help="CPU threads for a batch-64 throughput measured here "
                   "(default torch's; batch-1 latency uses 1 thread)")
    p.add_argument("--title", help="page title")
    p.add_argument("--quiet", action="store_true", help="print only where the report is")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from adaptkd.report import build_report, print_report

    rep = build_report(args.runs, args.out, which=args.which, evaluate=not args.no_eval,
                       measure=args.measure, device=args.device, title=args.title,
                       threads=args.threads)
    if args.quiet:
        print(rep.html)
    else:
        print_report(rep)
    return 0
