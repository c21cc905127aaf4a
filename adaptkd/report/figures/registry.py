"""Figure families: a method's dedicated signal figures, registered by the signal-key prefixes they draw.

A family is ``(name, prefixes, draw)``: ``draw(run, series)`` returns the run's figures for the signals whose
keys start with one of ``prefixes`` (``[]`` when the run has none it can draw). Every family module registers
itself here at import; a method names its family, and signals no family drew fall back to the generic panels
(:mod:`adaptkd.report.figures.generic`), so a new method's signals always appear.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from adaptkd.report.figures.base import Fig
from adaptkd.report.runs import RunData
from adaptkd.report.series import RunSeries

__all__ = ["FigureFamily", "SignalFigure", "figure_families", "figure_family", "register_figure_family"]


@dataclass(frozen=True)
class SignalFigure:
    """One drawn figure of a family: ``name`` (file stem, slugged), the figure, and its caption."""

    name: str
    fig: Fig
    caption: str


DrawFn = Callable[[RunData, RunSeries], list[SignalFigure]]


@dataclass(frozen=True)
class FigureFamily:
    name: str
    prefixes: tuple[str, ...]
    draw: DrawFn

    def claims(self, rs: RunSeries) -> bool:
        """Whether the run logged any signal this family draws (step or epoch level)."""
        return any(k.startswith(self.prefixes) for k in (*rs.step, *rs.epoch))


_FAMILIES: dict[str, FigureFamily] = {}


def register_figure_family(name: str, prefixes: tuple[str, ...] | list[str], draw: DrawFn) -> FigureFamily:
    """Register ``draw`` for the signals under ``prefixes`` (e.g. ``("dtkd/",)``); ``ValueError`` if taken."""
    prefixes = tuple(prefixes)
    if not name or not prefixes or not all(isinstance(p, str) and p for p in prefixes):
        raise ValueError(f"figure family {name!r} needs a name and non-empty signal prefixes, got {prefixes!r}")
    if name in _FAMILIES and _FAMILIES[name].draw is not draw:
        raise ValueError(f"figure family {name!r} is already registered")
    fam = FigureFamily(name, prefixes, draw)
    _FAMILIES[name] = fam
    return fam


def figure_family(name: str) -> FigureFamily:
    """The family registered as ``name``; ``KeyError`` naming the closest names otherwise."""
    try:
        return _FAMILIES[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_FAMILIES), n=3)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise KeyError(f"unknown figure family {name!r}{hint}") from None


def figure_families() -> dict[str, FigureFamily]:
    """Every registered family by name, in registration order."""
    return dict(_FAMILIES)
