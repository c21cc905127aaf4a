"""What every figure shares: the style, the ``Fig`` wrapper (records each drawn series for the text
version), axis helpers, and rendering a figure to PNG in the report folder."""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adaptkd.report.document import FigureBlock
from adaptkd.report.output import Writer
from adaptkd.report.runs import RunData
from adaptkd.report.series import RunSeries, Series, scalar_series

__all__ = [
    "ACCURACY_FLOOR_STEP",
    "RC",
    "Fig",
    "accuracy_floor",
    "finish_ax",
    "legend_outside",
    "line_key",
    "log_ticks",
    "maybe_log",
    "method_option",
    "new_fig",
    "palette_color",
    "render_figure",
    "set_accuracy_axis",
    "styled",
    "wrap",
]


TITLE_CHARS = 38  # panel titles wrap here: a panel with its legend beside it is about this wide at 10 pt

RC: dict[str, Any] = {"axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
                      "font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8, "legend.frameon": False,
                      "axes.titleweight": "bold"}


def palette_color(i: int) -> str:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf"]
    return palette[i % len(palette)]


class Fig:
    """A matplotlib figure (object API, Agg canvas; pyplot's global state is never touched) that
    records every series it draws for the text summary."""

    def __init__(self, title: str, panels: int, *, ncols: int = 3, w: float = 4.3, h: float = 3.0) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.ncols = max(1, min(ncols, panels))
        nrows = max(1, math.ceil(panels / self.ncols))
        self.fig = Figure(figsize=(w * self.ncols, h * nrows), dpi=100, layout="constrained")
        FigureCanvasAgg(self.fig)  # a renderer for layout checks; nothing global
        self.axes = list(self.fig.subplots(nrows, self.ncols, squeeze=False).ravel())
        for ax in self.axes[panels:]:
            ax.set_visible(False)
        self.fig.suptitle(title, fontsize=11, fontweight="bold")
        self.title = title
        self.series: list[Series] = []
        self.keys: set[str] = set()
        self.shared_legend = False  # one legend for the figure (the same runs in every panel)
        self.notes: list[str] = []  # added to the caption (e.g. what was not drawn and why)

    def line(self, ax, xs, ys, label: str, panel: str, *, key: str | None = None, legend: bool = True,
             text: str | None = None, **kw) -> None:
        """Plot a line; record it for the text version as ``panel: text`` (``text`` defaults to ``label``)."""
        ys = [float("nan") if y is None else float(y) for y in ys]
        if len(xs) <= 2 and kw.get("marker") is None:  # one or two points make no visible line
            kw = {**kw, "marker": "o", "markersize": kw.get("markersize", 3)}
        ax.plot(xs, ys, label=label if legend else "_nolegend_", **kw)
        name = text or label
        self.series.append(Series(f"{panel}: {name}" if panel else name, list(map(float, xs)), ys))
        if key:
            self.keys.add(key)

    def merge_legends(self) -> None:
        """When every panel's legend lists the same entries (runs overlaid in each panel), keep one legend
        for the figure, outside the panels, instead of repeating it."""
        legends = [ax.get_legend() for ax in self.axes if ax.get_visible() and ax.get_legend() is not None]
        if self.shared_legend:
            handles, labels, seen = [], [], set()
            for ax in self.axes:
                for h, lab in zip(*ax.get_legend_handles_labels()):
                    if lab not in seen:
                        seen.add(lab)
                        handles.append(h)
                        labels.append(lab)
            for lg in legends:
                lg.remove()
            if handles:
                self.fig.legend(handles, labels, loc="outside right upper")
            return
        if len(legends) < 2:
            return
        entries = [tuple(t.get_text() for t in lg.get_texts()) for lg in legends]
        if len(set(entries)) != 1:
            return
        handles, labels = self.axes[self.axes.index(legends[0].axes)].get_legend_handles_labels()
        for lg in legends:
            lg.remove()
        self.fig.legend(handles, labels, loc="outside right upper")

    def png(self) -> bytes:
        self.merge_legends()
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=100)
        return buf.getvalue()


def finish_ax(ax, title: str, xlabel: str = "epoch", ylabel: str = "", legend: bool | None = None) -> None:
    """Title (wrapped to the panel), axis labels and the legend outside the data: by default only when the
    panel has two or more entries (one line needs no key; its title names it)."""
    ax.set_title(wrap(title))
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    handles, _labels = ax.get_legend_handles_labels()
    if handles and (legend or (legend is None and len(handles) > 1)):
        legend_outside(ax)


def wrap(text: str, width: int = TITLE_CHARS) -> str:
    """``text`` broken into lines of at most ``width`` characters (a panel title wider than its panel is cut)."""
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def legend_outside(ax, **kw) -> None:
    """The panel's legend to the right of the plotting area (never over the data; the layout makes room)."""
    n = len(ax.get_legend_handles_labels()[0])
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, ncol=1 if n <= 12 else 2, **kw)


# Accuracy axes start at zero, or at a stated floor: the largest multiple of ACCURACY_FLOOR_STEP below the lowest
# value drawn, less one step (so the smallest value still has a visible distance from the axis) — never a floor
# fitted just under the data, which makes a 1-point gap look like a factor.
ACCURACY_FLOOR_STEP = 10.0


def accuracy_floor(values: Sequence[float | None]) -> float:
    """Lower limit of an accuracy axis (%) for ``values``: 0, or a multiple of 10 at least 5 points below them."""
    fin = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not fin:
        return 0.0
    floor = math.floor((min(fin) - 5.0) / ACCURACY_FLOOR_STEP) * ACCURACY_FLOOR_STEP
    return min(max(floor, 0.0), 90.0)


def set_accuracy_axis(ax, values: Sequence[float | None], *, axis: str = "y", label: str = "top-1 %",
                      zero: bool = False) -> float:
    """Limit an accuracy axis to [floor, 100] (``zero``: [0, 100], for bars, whose length is the value) and
    state a non-zero floor in the axis label. Returns the floor."""
    floor = 0.0 if zero else accuracy_floor(values)
    top = 100.0 + (1.5 if zero else 1.0)
    (ax.set_ylim if axis == "y" else ax.set_xlim)(floor, top)
    text = label + (f" (axis from {floor:g} %)" if floor > 0 else "")
    (ax.set_ylabel if axis == "y" else ax.set_xlabel)(text)
    return floor


def log_ticks(ax, lo: float, hi: float, *, axis: str = "x", max_ticks: int = 5) -> list[float]:
    """Round, labelled ticks on a log axis covering [lo, hi]: the densest of 1-2-5, 1-3, 1 per decade (then
    every other decade) that needs at most ``max_ticks``, the axis widened to the ticks just outside the data
    (so both ends carry a label); minor ticks unlabelled. Returns the ticks."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    lo, hi = max(lo, 1e-30), max(hi, lo * 1.0001)
    e0, e1 = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
    ticks: list[float] = []
    for mantissas, every in (((1, 2, 5), 1), ((1, 3), 1), ((1,), 1), ((1,), 2), ((1,), 3), ((1,), 6)):
        grid = sorted(m * 10.0 ** e for e in range(e0, e1 + 1) if (e - e0) % every == 0 for m in mantissas)
        below = [v for v in grid if v <= lo]
        above = [v for v in grid if v >= hi]
        if not below or not above:
            continue
        ticks = [v for v in grid if below[-1] <= v <= above[0]]
        if len(ticks) <= max_ticks:
            break
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xlim if axis == "x" else ax.set_ylim)(ticks[0], ticks[-1])
    target.set_major_locator(FixedLocator(ticks))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())
    return ticks


def maybe_log(ax, values: list[float]) -> None:
    fin = [v for v in values if math.isfinite(v)]
    if fin and min(fin) > 0 and max(fin) / min(fin) > 30:
        ax.set_yscale("log")


def render_figure(fig: Fig, w: Writer, name: str, caption: str, figures: list[Path]) -> FigureBlock:
    from matplotlib import rc_context

    with rc_context(RC):  # type: ignore[arg-type]  # matplotlib types the keys as literals
        data = fig.png()
    path = w.bytes(name, data)
    figures.append(path)
    caption = " ".join([caption, *(n[0].upper() + n[1:] + "." for n in fig.notes if n)])
    return FigureBlock(file=name, title=fig.title, caption=caption, series=fig.series, keys=sorted(fig.keys),
                       data=data, figure=fig.fig)


def new_fig(title: str, panels: int, **kw) -> Fig:
    from matplotlib import rc_context

    with rc_context(RC):  # type: ignore[arg-type]  # matplotlib types the keys as literals
        return Fig(title, panels, **kw)


def styled(fn):
    """Run a figure-drawing function inside the report's matplotlib style."""
    from matplotlib import rc_context

    def wrapper(*a, **k):
        with rc_context(RC):  # type: ignore[arg-type]  # matplotlib types the keys as literals
            return fn(*a, **k)

    return wrapper


def line_key(f: Fig, ax, rs: RunSeries, key: str, label: str, panel: str, **kw) -> bool:
    """Plot signal ``key`` (and, as dots, its per-epoch summary when the run logged one)."""
    got = scalar_series(rs, key)
    if got is None:
        return False
    f.line(ax, got[0], got[1], label, panel, key=key, **kw)
    mean_key = rs.epoch_means.get(key)
    if mean_key and mean_key in rs.epoch:
        xs, ys = rs.epoch[mean_key]
        color = ax.get_lines()[-1].get_color()
        f.line(ax, xs, ys, f"{label} (per epoch)", panel, key=mean_key, color=color, linestyle="none", marker="o",
               markersize=3, legend=False)
    return True


def method_option(run: RunData, name: str) -> Any:
    """A method option as the run used it (the config's value, else the method's default)."""
    opts = {k: v for k, v in run.config.get("method", {}).items() if k != "name"}
    if name in opts:
        return opts[name]
    try:
        from adaptkd.methods import method_class

        return getattr(method_class(run.method).Params.model_validate(opts), name, None)
    except Exception:  # noqa: BLE001 - a method this install does not know: no reference line
        return None


