"""SwitOKD expert/learning mode (``switokd/<teacher>-<student>/gap``, ``threshold``, ``expert``, ...)."""

from __future__ import annotations

from adaptkd.report.figures.base import Fig, finish_ax, line_key, new_fig, styled
from adaptkd.report.figures.registry import SignalFigure, register_figure_family
from adaptkd.report.runs import RunData
from adaptkd.report.series import RunSeries, Series, scalar_series


@styled
def draw_switokd(run: RunData, rs: RunSeries, pair: str) -> Fig:
    p = f"switokd/{pair}/"
    f = new_fig(f"SwitOKD — {run.label} (pair {pair})", 3, ncols=3, w=4.4)
    ax_g, ax_d, ax_m = f.axes
    line_key(f, ax_g, rs, p + "gap", "gap G", "gap", color="#1f77b4", linewidth=1.4)
    line_key(f, ax_g, rs, p + "threshold", "threshold δ", "gap", color="#d62728", linewidth=1.2)
    ex = scalar_series(rs, p + "expert")
    if ex:
        f.keys.add(p + "expert")
        f.series.append(Series("mode: expert (1) / learning (0) at logged steps", ex[0], ex[1]))
        xs, ys = ex
        span = (xs[1] - xs[0]) / 2 if len(xs) > 1 else 0.5
        first = True
        for x, y in zip(xs, ys):
            if y > 0.5:
                ax_g.axvspan(x - span, x + span, color="#ff7f0e", alpha=0.15, linewidth=0,
                             label="expert mode (logged step)" if first else None)
                first = False
        if rs.epoch_means.get(p + "expert"):
            f.keys.add(rs.epoch_means[p + "expert"])
    finish_ax(ax_g, "gap G vs threshold δ (expert iff G > δ and t < s)")
    line_key(f, ax_d, rs, p + "t_dist", "t = ‖p_t − y‖₁", "distances", color="#555555")
    line_key(f, ax_d, rs, p + "s_dist", "s = ‖p_s − y‖₁", "distances", color="#1f77b4")
    line_key(f, ax_d, rs, p + "epsilon", "ε = exp(−t/(t+s))", "distances", color="#2ca02c", linestyle="--")
    finish_ax(ax_d, "label distances and ε")
    drew = line_key(f, ax_m, rs, p + "expert_frac", "expert-mode fraction", "per epoch", color="#ff7f0e", marker="o",
                     markersize=3)
    teacher = pair.split("-")[0] if "-" in pair else None
    for k in rs.epoch:
        if k.startswith("switokd/") and k.endswith("/paused_frac") and (teacher is None or f"/{teacher}/" in k):
            drew |= line_key(f, ax_m, rs, k, f"{k.split('/')[1]} paused", "per epoch", color="#555555", marker="s",
                              markersize=3)
    ax_m.set_ylim(-0.02, 1.02)
    finish_ax(ax_m, "fraction of steps per epoch" if drew else "per-epoch mode fractions (none logged)")
    return f




def figures(run: RunData, rs: RunSeries) -> list[SignalFigure]:
    pairs = sorted({k.split("/")[1] for k in (*rs.step, *rs.epoch)
                    if k.startswith("switokd/") and (k.endswith(("/gap", "/expert_frac")))})
    return [SignalFigure(f"switokd-{pr}", draw_switokd(run, rs, pr),
                         "SwitOKD: the gap G against the threshold δ (shaded: steps logged in expert mode, when the "
                         "teacher pauses), the label distances t and s with ε, and per epoch the fraction of steps "
                         "in expert mode and of steps the teacher was paused.") for pr in pairs]


register_figure_family("switokd", ("switokd/",), figures)
