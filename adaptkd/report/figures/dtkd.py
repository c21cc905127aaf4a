"""DTKD temperatures (``<p>/student_T_*``, ``teacher_T_*``, ``guarded``; also a ``compose`` dtkd term)."""

from __future__ import annotations

import re

from adaptkd.report.figures.base import (
    Fig,
    finish_ax,
    line_key,
    method_option,
    new_fig,
    styled,
)
from adaptkd.report.figures.registry import SignalFigure, register_figure_family
from adaptkd.report.runs import RunData
from adaptkd.report.series import RunSeries, Series, scalar_series


@styled
def draw_dtkd(run: RunData, rs: RunSeries, prefix: str) -> Fig:
    guarded = scalar_series(rs, f"{prefix}guarded")
    unused = guarded is not None and not any(guarded[1])  # no sample needed the fallback: a flat zero panel
    f = new_fig(f"DTKD temperatures — {run.label}" + (f" ({prefix.rstrip('/')})" if prefix.strip("/") else ""),
                1 if unused else 2, ncols=2, w=5.0)
    ax_t = f.axes[0]
    for who, color in (("student", "#1f77b4"), ("teacher", "#d62728")):
        lo, hi = scalar_series(rs, f"{prefix}{who}_T_min"), scalar_series(rs, f"{prefix}{who}_T_max")
        if lo and hi and len(lo[0]) == len(hi[0]):
            ax_t.fill_between(lo[0], lo[1], hi[1], color=color, alpha=0.18, linewidth=0, label=f"{who} min–max")
        for stat in ("min", "max"):
            line_key(f, ax_t, rs, f"{prefix}{who}_T_{stat}", f"{who} T {stat}", "temperature", color=color,
                      linewidth=0.6, alpha=0.6, legend=False)
        line_key(f, ax_t, rs, f"{prefix}{who}_T_mean", f"{who} T mean", "temperature", color=color, linewidth=1.6)
    base = method_option(run, "temperature") if prefix.strip("/") == run.method else None
    if isinstance(base, (int, float)):
        ax_t.axhline(base, color="black", linestyle="--", linewidth=0.8, label=f"base T = {base:g}")
    finish_ax(ax_t, "per-sample temperatures: mean and min–max band")
    if unused and guarded is not None:
        key = f"{prefix}guarded"
        f.series.append(Series("guarded samples (0 at every logged step)", guarded[0], guarded[1]))
        f.keys |= {key, *([rs.epoch_means[key]] if key in rs.epoch_means else [])}
        f.notes.append("no sample used the fallback T (guarded = 0 at every logged step), so its panel is not drawn")
        return f
    ax_g = f.axes[1]
    line_key(f, ax_g, rs, f"{prefix}guarded", "guarded samples", "guarded", color="#9467bd")
    finish_ax(ax_g, "samples using the fallback T (m_s + m_t ≤ 0)", ylabel="count per logged step")
    return f




DTKD_CAPTION = ("Per-sample DTKD temperatures of student and teacher over training (mean line, min–max band at each "
                "logged step; dots: per-epoch mean/min/max) and how many samples fell back to the base T.")


def figures(run: RunData, rs: RunSeries) -> list[SignalFigure]:
    out = []
    for k in rs.step:
        m = re.match(r"^(.*?)student_T_mean$", k)
        if m and (m.group(1) == "" or m.group(1).endswith("/")):
            out.append(SignalFigure(f"dtkd-{m.group(1)}", draw_dtkd(run, rs, m.group(1)), DTKD_CAPTION))
    return out


register_figure_family("dtkd", ("dtkd/",), figures)
