"""The report's figures: summary figures, training curves, one module per method family of adaptive signals
(registered by signal prefix in :mod:`.registry`), and the generic panels that draw every other signal."""

from __future__ import annotations

from pathlib import Path

from adaptkd.report.document import FigureBlock
from adaptkd.report.figures import balance, dtkd, features, switokd, unic  # noqa: F401 - register the families
from adaptkd.report.figures.base import render_figure
from adaptkd.report.figures.generic import draw_generic, group_of
from adaptkd.report.figures.registry import (
    FigureFamily,
    SignalFigure,
    figure_families,
    figure_family,
    register_figure_family,
)
from adaptkd.report.output import Writer, slug
from adaptkd.report.runs import RunData
from adaptkd.report.series import RunSeries

__all__ = [
    "FigureFamily",
    "SignalFigure",
    "figure_families",
    "figure_family",
    "register_figure_family",
    "signal_figures",
]

GENERIC_PER_FIGURE = 6


def signal_figures(runs: list[RunData], rss: list[RunSeries], w: Writer,
                   figures: list[Path]) -> tuple[list[FigureBlock], dict[str, list[str]]]:
    """Each run's family figures, then generic panels (overlaid across runs) for every signal left over.

    Returns the figure blocks and, per run label, the signal keys plotted."""
    blocks: list[FigureBlock] = []
    plotted: dict[str, set[str]] = {r.label: set() for r in runs}
    for run, rs in zip(runs, rss):
        for fam in figure_families().values():
            if not fam.claims(rs):
                continue
            for sf in fam.draw(run, rs):
                prefix = slug(run.label) + "-" if len(runs) > 1 else ""
                blocks.append(render_figure(sf.fig, w, f"signal-{prefix}{slug(sf.name)}.png", sf.caption, figures))
                plotted[run.label] |= set(sf.fig.keys)
    left: dict[str, list[str]] = {}
    for run, rs in zip(runs, rss):
        for k in rs.signals:
            if k not in plotted[run.label]:
                g = group_of(k)
                if k not in left.setdefault(g, []):
                    left[g].append(k)
    n = GENERIC_PER_FIGURE
    for g, keys in left.items():
        for i in range(0, len(keys), n):
            chunk = keys[i:i + n]
            fig = draw_generic(g, chunk, runs, rss)
            suffix = f"-{i // n + 1}" if len(keys) > n else ""
            blocks.append(render_figure(fig, w, f"signal-{slug(g)}{suffix}.png", "Every logged value of these signals "
                                        "(dots: the per-epoch summary, where the run logged one).", figures))
            for run, rs in zip(runs, rss):
                plotted[run.label] |= {k for k in chunk if rs.get(k)} | {rs.epoch_means[k] for k in chunk
                                                                        if k in rs.epoch_means}
    return blocks, {k: sorted(v) for k, v in plotted.items()}
