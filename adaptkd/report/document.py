"""The report's data model (tables, figures, sections, the written report) and number formatting."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptkd.report.series import Series, sparkline

__all__ = ["FigureBlock", "Report", "Section", "Table", "fmt", "fmt_bytes", "fmt_count", "fmt_num", "series_row"]



@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class FigureBlock:
    """A figure: its PNG ``file`` name (written beside the page), ``data`` (the PNG bytes, embedded in the
    HTML), the series it draws (its text version) and the signal keys it covers; ``figure`` is the
    matplotlib figure (for layout checks)."""

    file: str
    title: str
    caption: str
    series: list[Series]
    keys: list[str]
    data: bytes = field(default=b"", repr=False)
    figure: Any = field(default=None, repr=False)


@dataclass
class Section:
    title: str
    blocks: list[Any] = field(default_factory=list)  # Table | FigureBlock | str (a note)


@dataclass
class Report:
    """What :func:`build_report` wrote: the page, the Markdown, figures and the signal keys covered."""

    title: str
    out: Path
    html: Path
    markdown: Path
    manifest: Path
    sections: list[Section]
    figures: list[Path]
    signals: dict[str, list[str]]  # run label -> signal keys found
    plotted: dict[str, list[str]]  # run label -> signal keys plotted
    notes: list[str]




def fmt_count(n: Any) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f}"


def fmt_bytes(n: Any) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def fmt(v: Any, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{nd}f}"


def fmt_num(v: float) -> str:
    if not math.isfinite(v):
        return "nan"
    a = abs(v)
    if a != 0 and (a < 1e-3 or a >= 1e5):
        return f"{v:.3g}"
    return f"{v:.4g}"




def series_row(s: Series) -> list[str]:
    """``[label, sparkline, first, min, max, last]`` of a plotted series (the text version of a line)."""
    fin = [v for v in s.y if math.isfinite(v)]
    if not fin:
        return [s.label, "", "-", "-", "-", "-"]
    first = next(v for v in s.y if math.isfinite(v))
    last = next(v for v in reversed(s.y) if math.isfinite(v))
    return [s.label, sparkline(s.y), fmt_num(first), fmt_num(min(fin)), fmt_num(max(fin)), fmt_num(last)]
