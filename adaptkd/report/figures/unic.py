"""UNIC multi-teacher distillation (``unic/loss/<t>``, ``unic/kept/<t>`` teacher dropping, ``unic/coeff/<t>``)."""

from __future__ import annotations

from adaptkd.report.figures.base import (
    Fig,
    finish_ax,
    line_key,
    new_fig,
    palette_color,
    styled,
)
from adaptkd.report.figures.registry import SignalFigure, register_figure_family
from adaptkd.report.runs import RunData
from adaptkd.report.series import RunSeries


@styled
def draw_unic(run: RunData, rs: RunSeries) -> Fig:
    teachers = sorted({k.split("/", 2)[2] for k in rs.step
                       if k.startswith(("unic/loss/", "unic/kept/", "unic/coeff/"))})
    f = new_fig(f"UNIC multi-teacher — {run.label}", 4, ncols=2, w=5.0)
    ax_l, ax_k, ax_c, ax_m = f.axes
    for i, t in enumerate(teachers):
        c = palette_color(i)
        line_key(f, ax_l, rs, f"unic/loss/{t}", t, "loss", color=c)
        line_key(f, ax_k, rs, f"unic/kept/{t}", t, "kept", color=c, linewidth=0.8, alpha=0.7)
        line_key(f, ax_c, rs, f"unic/coeff/{t}", t, "coefficient", color=c)
        for what, ax in (("loss", ax_l), ("kept", ax_k)):
            line_key(f, ax, rs, f"unic/epoch_{what}/{t}", f"{t} (epoch mean)", what, color=c, marker="o",
                      markersize=3, linestyle="--")
    finish_ax(ax_l, "per-teacher distillation loss")
    ax_k.set_ylim(-0.02, 1.02)
    finish_ax(ax_k, "per-teacher kept fraction (teacher dropping)")
    finish_ax(ax_c, "per-teacher loss coefficient (Σ weights)")
    line_key(f, ax_m, rs, "unic/momentum", "m", "momentum", color="#555555")
    finish_ax(ax_m, "standardiser momentum (weight on the new batch)")
    return f




def figures(run: RunData, rs: RunSeries) -> list[SignalFigure]:
    if not any(k.startswith("unic/") for k in rs.step):
        return []
    return [SignalFigure("unic", draw_unic(run, rs),
                         "UNIC: per-teacher loss, the fraction of images on which each teacher was kept by teacher "
                         "dropping, each teacher's loss coefficient, and the standardiser momentum.")]


register_figure_family("unic", ("unic/",), figures)
