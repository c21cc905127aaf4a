"""What every figure shares: the style, the ``Fig`` wrapper (records each drawn series for the text
version), axis helpers, and rendering a figure to PNG in the report folder."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from adaptkd.report.document import FigureBlock
from adaptkd.report.output import Writer
from adaptkd.report.runs import RunData
from adaptkd.report.series import RunSeries, Series, scalar_series

__all__ = [
    "RC",
    "Fig",
    "finish_ax",
    "line_key",
    "maybe_log",
    "method_option",
    "new_fig",
    "palette_color",
    "render_figure",
    "styled",
]


RC = {"axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False, "font.size": 9,
       "axes.titlesize": 10, "legend.fontsize": 8, "legend.frameon": False, "axes.titleweight": "bold"}


def palette_color(i: int) -> str:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf"]
    return palette[i % len(palette)]


class Fig:
    """A matplotlib figure (object API, Agg canvas; pyplot's global state is never touched) that
    records every series it draws for the text summary."""

    def __init__(self, title: str, panels: int, *, ncols: int = 3, w: float = 4.3, h: float = 3.0) -> None:
        from matplotlib.figure import Figure

        self.ncols = max(1, min(ncols, panels))
        nrows = max(1, math.ceil(panels / self.ncols))
        self.fig = Figure(figsize=(w * self.ncols, h * nrows), dpi=100, layout="constrained")
        self.axes = list(self.fig.subplots(nrows, self.ncols, squeeze=False).ravel())
        for ax in self.axes[panels:]:
            ax.set_visible(False)
        self.fig.suptitle(title, fontsize=11, fontweight="bold")
        self.title = title
        self.series: list[Series] = []
        self.keys: set[str] = set()

    def line(self, ax, xs, ys, label: str, panel: str, *, key: str | None = None, legend: bool = True, **kw) -> None:
        ys = [float("nan") if y is None else float(y) for y in ys]
        ax.plot(xs, ys, label=label if legend else "_nolegend_", **kw)
        self.series.append(Series(f"{panel}: {label}" if panel else label, list(map(float, xs)), ys))
        if key:
            self.keys.add(key)

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=100)
        return buf.getvalue()


def finish_ax(ax, title: str, xlabel: str = "epoch", ylabel: str = "", legend: bool = True) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    handles, _labels = ax.get_legend_handles_labels()
    if legend and handles:
        ax.legend(loc="best", ncol=1 if len(handles) <= 5 else 2)


def maybe_log(ax, values: list[float]) -> None:
    fin = [v for v in values if math.isfinite(v)]
    if fin and min(fin) > 0 and max(fin) / min(fin) > 30:
        ax.set_yscale("log")


def render_figure(fig: Fig, w: Writer, name: str, caption: str, figures: list[Path]) -> FigureBlock:
    from matplotlib import rc_context

    with rc_context(RC):
        data = fig.png()
    path = w.bytes(name, data)
    figures.append(path)
    return FigureBlock(file=name, title=fig.title, caption=caption, series=fig.series, keys=sorted(fig.keys))


def new_fig(title: str, panels: int, **kw) -> Fig:
    from matplotlib import rc_context

    with rc_context(RC):
        return Fig(title, panels, **kw)


def styled(fn):
    """Run a figure-drawing function inside the report's matplotlib style."""
    from matplotlib import rc_context

    def wrapper(*a, **k):
        with rc_context(RC):
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


