"""The generic fallback: small multiples of every signal no figure family drew, grouped by key prefix and
overlaid across runs (lists of ≤ 8 values as one line each, longer lists as their mean)."""

from __future__ import annotations

import math

from adaptkd.report.figures.base import Fig, finish_ax, new_fig, palette_color, styled
from adaptkd.report.runs import RunData
from adaptkd.report.series import RunSeries

__all__ = ["draw_generic", "group_of"]


def group_of(key: str) -> str:
    k = key.removeprefix("train/")
    return k.rsplit("/", 1)[0] if "/" in k else "signals"


@styled
def draw_generic(group: str, keys: list[str], runs: list[RunData], rss: list[RunSeries]) -> Fig:
    compare = len(runs) > 1
    f = new_fig(f"Signals: {group}" + (" (overlaid)" if compare else f" — {runs[0].label}"), len(keys), ncols=3,
                 w=4.3, h=2.8)
    for ax, key in zip(f.axes, keys):
        for ri, (run, rs) in enumerate(zip(runs, rss)):
            got = rs.get(key)
            if not got:
                continue
            xs, ys = got
            base = run.label if compare else ""
            if any(isinstance(y, list) for y in ys):
                rows = [y if isinstance(y, list) else [y] for y in ys]
                width = max(len(r) for r in rows)
                if width <= 8:
                    for j in range(width):
                        f.line(ax, xs, [r[j] if j < len(r) else float("nan") for r in rows], f"{base} [{j}]".strip(),
                               key, key=key, color=palette_color(ri * 8 + j) if not compare else palette_color(ri),
                               alpha=1.0 if not compare else 0.4 + 0.6 * (j + 1) / width, linewidth=1.0)
                else:
                    means = [sum(v for v in r if math.isfinite(v)) / max(sum(1 for v in r if math.isfinite(v)), 1)
                             for r in rows]
                    f.line(ax, xs, means, f"{base} mean of {width}".strip(), key, key=key, color=palette_color(ri))
            else:
                level_epoch = key in rs.epoch and key not in rs.step
                f.line(ax, xs, ys, base or ("per epoch" if level_epoch else "per logged step"), key, key=key,
                       color=palette_color(ri), marker="o" if level_epoch or len(xs) < 12 else None, markersize=3)
            mean_key = rs.epoch_means.get(key)
            if mean_key:
                mx, my = rs.epoch[mean_key]
                f.line(ax, mx, my, f"{base} per epoch".strip(), key, key=mean_key, color=palette_color(ri),
                       linestyle="none", marker="o", markersize=3, legend=False)
        short = key[len(group) + 1:] if key.startswith(group + "/") else key
        finish_ax(ax, short or key, legend=compare or len(ax.get_lines()) > 1)
    return f
