"""Report card of one run, or a comparison of several: what a deployment engineer acts on.

``build_report(runs, out)`` writes one self-contained HTML page (``report.html``; no scripts,
no external resources) with its PNG figures beside it, the same content as Markdown
(``report.md``: tables, and every figure as text sparklines) and a manifest (``report.json``).
:func:`print_report` shows the Markdown content on a terminal with rich.

What the page holds:

* models — teacher(s) vs student(s): top-1/top-5 on the test split (re-evaluated from the
  checkpoint the export would ship, ``best.pt`` by default), parameters, checkpoint size, FLOPs
  per image (``torch.utils.flop_counter``), CPU latency at batch 1 and throughput at batch 64
  (``torch.utils.benchmark``, median of many runs, threads stated), and per student the ratios
  to its teacher;
* per-class accuracy (datasets with ≤ 20 classes);
* agreement between each student's and each teacher's predictions on the test split;
* training curves (accuracy, loss terms, learning rate, throughput, varying loss weights);
* a plot of every numeric signal the run logged to ``metrics.jsonl``: dedicated figures for the
  registered figure families (DTKD temperatures, gradient balancing λ/a/b/c, SwitOKD gap/threshold/mode,
  UNIC per-teacher losses/kept fractions, RTK influence per teacher layer) and generic panels
  for every other signal, so a newly added method's signals appear without touching the report.

Several runs give one comparison page: one table, overlaid curves and signals.

Files are written only inside the output folder (``<run>/report`` for one run, ``out`` for a
comparison); file names are generated and checked, a symbolic link planted where a file or the
folder goes is refused, and a default folder that resolves outside its run is refused.

Layout: :mod:`.runs` reads run folders, :mod:`.series` turns metrics into series, :mod:`.models`
re-evaluates and measures the networks, :mod:`.tables` and :mod:`.figures` (one module per method
family, registered by signal prefix) build the sections of :mod:`.document`, :mod:`.render` writes
them as HTML, Markdown and terminal text, :mod:`.build` ties it together.
"""

from __future__ import annotations

from adaptkd.report.build import build_report
from adaptkd.report.document import FigureBlock, Report, Section, Table
from adaptkd.report.figures import (
    figure_families,
    figure_family,
    register_figure_family,
)
from adaptkd.report.render import print_report
from adaptkd.report.runs import ReportError, RunData, load_run
from adaptkd.report.series import Series, signal_keys, sparkline

__all__ = [
    "FigureBlock",
    "Report",
    "ReportError",
    "RunData",
    "Section",
    "Series",
    "Table",
    "build_report",
    "figure_families",
    "figure_family",
    "load_run",
    "print_report",
    "register_figure_family",
    "signal_keys",
    "sparkline",
]
