"""Feature/attention distillation: RTK representative keys (``rtk/influence`` per teacher layer, kept keys,
attention entropy). Other feature methods (AFD, FitNet) log few signals: the generic panels draw them."""

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
from adaptkd.report.series import RunSeries, Series


@styled
def draw_rtk(run: RunData, rs: RunSeries) -> Fig:
    f = new_fig(f"RTK representative keys — {run.label}", 3, ncols=3, w=4.6)
    ax_h, ax_k, ax_e = f.axes
    taps = [k[len("rtk/kept/"):] for k in rs.epoch if k.startswith("rtk/kept/")]
    infl = rs.step.get("rtk/influence")
    if infl and infl[1]:
        xs, ys = infl
        rows = [y if isinstance(y, list) else [y] for y in ys]
        width = max(len(r) for r in rows)
        grid = [[(r[j] if j < len(r) else float("nan")) for r in rows] for j in range(width)]
        x0, x1 = (xs[0], xs[-1]) if len(xs) > 1 else (xs[0] - 0.5, xs[0] + 0.5)
        im = ax_h.imshow(grid, aspect="auto", origin="lower", extent=(x0, x1, -0.5, width - 0.5), cmap="viridis",
                         interpolation="nearest")
        f.fig.colorbar(im, ax=ax_h, shrink=0.8)
        names = taps if len(taps) == width else [str(j) for j in range(width)]
        ax_h.set_yticks(range(width), names, fontsize=7)
        for j in range(width):
            f.series.append(Series(f"influence: {names[j]}", list(xs), grid[j]))
        f.keys.add("rtk/influence")
        if rs.epoch_means.get("rtk/influence"):
            f.keys.add(rs.epoch_means["rtk/influence"])
    ax_h.set_title("influence per teacher layer")
    ax_h.set_xlabel("epoch")
    ax_h.grid(False)
    if not line_key(f, ax_k, rs, "rtk/kept_fraction", "all keys", "kept", color="#1f77b4", linewidth=0.8):
        line_key(f, ax_k, rs, "rtk/kept_fraction_epoch", "all keys (per epoch)", "kept", color="#1f77b4", marker="o")
    for i, t in enumerate(taps):
        line_key(f, ax_k, rs, f"rtk/kept/{t}", t, "kept", color=palette_color(i + 2), linestyle="--", marker=".")
    ax_k.set_ylim(-0.02, 1.02)
    finish_ax(ax_k, "kept-key fraction")
    line_key(f, ax_e, rs, "rtk/attention_entropy", "entropy", "attention", color="#9467bd")
    finish_ax(ax_e, "attention entropy (nats)")
    return f




def figures(run: RunData, rs: RunSeries) -> list[SignalFigure]:
    return [SignalFigure("rtk", draw_rtk(run, rs),
                         "RTK: influence of each teacher layer over training (heatmap), the fraction of teacher keys "
                         "kept, and the attention entropy.")]


register_figure_family("rtk", ("rtk/",), figures)
