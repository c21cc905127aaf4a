"""Gradient-based loss balancing (``balance/<learner>/lambda``, ``a``, ``b``, ``c``, controller state)."""

from __future__ import annotations

from adaptkd.report.figures.base import (
    Fig,
    finish_ax,
    line_key,
    maybe_log,
    new_fig,
    palette_color,
    styled,
)
from adaptkd.report.figures.registry import SignalFigure, register_figure_family
from adaptkd.report.runs import RunData
from adaptkd.report.series import RunSeries, scalar_series


@styled
def draw_balance(run: RunData, rs: RunSeries, learner: str) -> Fig:
    p = f"balance/{learner}/"
    extra = [k for k in rs.step if k.startswith(p) and k[len(p):] in ("lambda_rho", "lambda_psi", "renorm")]
    f = new_fig(f"Dynamic balancing — {run.label} ({learner})", 3 + (1 if extra else 0), ncols=2, w=5.0)
    ax_l, ax_n, ax_c = f.axes[:3]
    lo, hi = scalar_series(rs, p + "lambda_lo"), scalar_series(rs, p + "lambda_hi")
    if lo and hi and len(lo[0]) == len(hi[0]):
        ax_l.fill_between(lo[0], lo[1], hi[1], color="#1f77b4", alpha=0.15, linewidth=0, label="allowed [λ_lo, λ_hi]")
    for stat in ("lambda_lo", "lambda_hi"):
        line_key(f, ax_l, rs, p + stat, stat.replace("lambda", "λ"), "λ", color="#1f77b4", linewidth=0.5, alpha=0.5,
                  legend=False)
    line_key(f, ax_l, rs, p + "lambda", "λ (distillation share)", "λ", color="#1f77b4", linewidth=1.6)
    ax_l.set_ylim(-0.02, 1.02)
    finish_ax(ax_l, "λ: weight of distillation vs task")
    line_key(f, ax_n, rs, p + "a", "a = ‖g_task‖", "gradient norm", color="#2ca02c")
    line_key(f, ax_n, rs, p + "b", "b = ‖g_distill‖", "gradient norm", color="#d62728")
    got = scalar_series(rs, p + "a")
    maybe_log(ax_n, (got[1] if got else []) + ((scalar_series(rs, p + "b") or ([], []))[1]))
    finish_ax(ax_n, "gradient norms")
    line_key(f, ax_c, rs, p + "c", "c = cos(g_task, g_distill)", "cosine", color="#9467bd")
    ax_c.axhline(0, color="black", linewidth=0.6)
    ax_c.set_ylim(-1.05, 1.05)
    finish_ax(ax_c, "gradient cosine")
    if extra:
        ax_e = f.axes[3]
        for i, k in enumerate(extra):
            line_key(f, ax_e, rs, k, k[len(p):], "controller", color=palette_color(i + 4))
        finish_ax(ax_e, "controller state")
    return f




def figures(run: RunData, rs: RunSeries) -> list[SignalFigure]:
    learners = sorted({k.split("/")[1] for k in rs.step if k.startswith("balance/") and k.count("/") == 2})
    return [SignalFigure(f"balance-{ln}", draw_balance(run, rs, ln),
                         "Gradient-based balancing: λ (share of the distillation gradient) within its allowed band, "
                         "the task and distillation gradient norms a and b, and their cosine c.") for ln in learners]


register_figure_family("balance", ("balance/",), figures)
