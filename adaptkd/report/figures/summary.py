"""Summary figures: accuracy of every model, accuracy against cost, per-class accuracy, agreement."""

from __future__ import annotations

from typing import Any

from adaptkd.report.figures.base import (
    Fig,
    legend_outside,
    log_ticks,
    new_fig,
    palette_color,
    set_accuracy_axis,
    styled,
)
from adaptkd.report.models import ModelEntry, top1, top5
from adaptkd.report.seeds import ModelRow, mean_std

__all__ = ["draw_accuracy", "draw_agreement", "draw_per_class", "draw_tradeoff"]


TEACHER_GREY = "#555555"
TOP5_MIN_CLASSES = 11  # top-5 of 10 classes or fewer is ~100 % for any trained model: not drawn


def _row_color(row: ModelRow, i: int) -> str:
    return TEACHER_GREY if row.role == "teacher" else palette_color(i)


def _pm(st: tuple[float, float, int] | None, nd: int = 1) -> str:
    if st is None:
        return "-"
    m, sd, n = st
    return f"{m:.{nd}f} ± {sd:.{nd}f} (n={n})" if n > 1 else f"{m:.{nd}f}"


def _once(seen: set[str], label: str) -> str:
    """``label`` the first time (one legend entry per kind of mark), hidden from the legend afterwards."""
    if label in seen:
        return "_nolegend_"
    seen.add(label)
    return label


@styled
def draw_accuracy(rows: list[ModelRow]) -> Fig:
    """Horizontal bars from 0 (labels never collide); seeds: mean bar, ± std whisker and each seed as a dot."""
    num_classes = max((e.num_classes for r in rows for e in r.entries), default=0)
    show5 = num_classes >= TOP5_MIN_CLASSES
    f = new_fig("Accuracy on the test split", 1, ncols=1, w=7.2, h=0.5 * len(rows) * (1.6 if show5 else 1) + 1.5)
    ax = f.axes[0]
    ys = list(range(len(rows)))
    h = 0.38 if show5 else 0.6
    seen: set[str] = set()
    for y, row in zip(ys, rows):
        c = _row_color(row, y)
        for val, off, kw, lab in ((top1, -h / 2 if show5 else 0.0, {}, "top-1"),
                                  (top5, h / 2, {"alpha": 0.4, "hatch": "//"}, "top-5")):
            if lab == "top-5" and not show5:
                continue
            st = row.stats(val)
            if st is None:
                continue
            m, sd, n = st
            ax.barh([y + off], [m], height=h, color=c, label=_once(seen, lab) if show5 else "_nolegend_",
                    xerr=[sd] if n > 1 else None, error_kw={"ecolor": "black", "capsize": 3, "linewidth": 1}, **kw)
            if n > 1:
                ax.scatter([val(e) for e in row.entries], [y + off] * n, s=10, color="black", zorder=3,
                           label=_once(seen, "one seed"))
            ax.annotate(_pm(st), (100.0, y + off), xytext=(6, 0), textcoords="offset points", va="center",
                        fontsize=8, annotation_clip=False)
    ax.set_yticks(ys, [f"{r.label}\n{r.role}, {r.arch}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    set_accuracy_axis(ax, [], axis="x", label="accuracy % (axis from 0)", zero=True)
    ax.grid(axis="y", visible=False)
    if show5 or any(len(r.entries) > 1 for r in rows):
        legend_outside(ax)
    ax.set_title("top-1" + (" (solid) and top-5 (hatched)" if show5 else "") + "; teachers in grey"
                 + ("; mean ± std over seeds" if any(len(r.entries) > 1 for r in rows) else ""))
    return f


@styled
def draw_per_class(rows: list[ModelRow]) -> Fig:
    rows = [r for r in rows if all(e.eval for e in r.entries)]
    first = rows[0].entries[0].evaluation
    nc = len(first["per_class"])
    names = first.get("class_names") or [str(c) for c in range(nc)]
    f = new_fig("Per-class accuracy (test split)", 1, ncols=1, w=min(max(7.0, 0.12 * nc * len(rows) + 4), 16.0), h=3.4)
    ax = f.axes[0]
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        xs = [c + (i - (len(rows) - 1) / 2) * width for c in range(nc)]
        stats = [mean_std([e.evaluation["per_class"][c] for e in row.entries]) for c in range(nc)]
        means = [s[0] if s else 0.0 for s in stats]
        err = [s[1] if s else 0.0 for s in stats] if len(row.entries) > 1 else None
        ax.bar(xs, means, width=width, color=_row_color(row, i), label=row.label, yerr=err,
               error_kw={"ecolor": "black", "capsize": 1.5, "linewidth": 0.8},
               alpha=0.6 if row.role == "teacher" else 1.0)
    # Class names side by side need about 6 px a character at 8 pt (a class slot is the panel's width / nc);
    # when they do not fit they stand upright (each then needs one line height).
    slot_px = (f.fig.get_figwidth() - 2.5) * f.fig.dpi / nc
    tilt = max((len(str(n)) for n in names[:nc]), default=1) * 6 > 0.9 * slot_px
    ax.set_xticks(range(nc), [str(n) for n in names[:nc]], fontsize=8, rotation=90 if tilt else 0)
    ax.set_xlabel("class")
    set_accuracy_axis(ax, [], label="accuracy % (axis from 0)", zero=True)
    legend_outside(ax)
    return f


@styled
def draw_tradeoff(rows: list[ModelRow]) -> Fig | None:
    """Top-1 against CPU latency (or FLOPs) on a log axis with a few round, labelled ticks; models named in
    the legend (labels next to the points collide when models are close)."""
    def lat(e: ModelEntry) -> float | None:
        return (e.card.get("latency_b1") or {}).get("median_ms")

    def flops(e: ModelEntry) -> float | None:
        return e.card.get("flops")

    pts = [(r, i) for i, r in enumerate(rows) if r.stats(top1) and (r.stats(lat) or r.stats(flops))]
    if not pts:
        return None
    use_lat = all(r.stats(lat) for r, _ in pts)
    cost = lat if use_lat else flops
    f = new_fig("Accuracy vs cost", 1, ncols=1, w=7.2, h=3.8)
    ax = f.axes[0]
    biggest = max(max(e.card.get("params") or 0 for e in r.entries) for r, _ in pts) or 1
    xs_all, accs = [], []
    for r, i in pts:
        cst, ast = r.stats(cost), r.stats(top1)
        if cst is None or ast is None:
            continue
        (x, _, _), (acc, asd, n) = cst, ast
        size = 30 + 200 * (r.entries[0].card.get("params") or 0) / biggest
        ax.errorbar([x], [acc], yerr=[asd] if n > 1 else None, fmt="none", ecolor="black", capsize=3, linewidth=1)
        ax.scatter([x], [acc], s=size, color=_row_color(r, i), alpha=0.85, edgecolors="black", linewidths=0.5,
                   label=f"{r.label}: {_pm((acc, asd, n))} %", zorder=3)
        xs_all.append(x)
        accs.append(acc - asd)
    ax.set_xscale("log")
    log_ticks(ax, min(xs_all) / 1.25, max(xs_all) * 1.25)
    ax.set_xlabel("CPU latency at batch 1 (ms, 1 thread, log scale)" if use_lat else "FLOPs per image (log scale)")
    set_accuracy_axis(ax, accs)
    ax.set_title("up and left is better; marker area ∝ parameters")
    legend_outside(ax)
    for h in ax.get_legend().legend_handles:  # legend markers of one size (the plot's sizes are ∝ parameters)
        h.set_sizes([36])
    return f


@styled
def draw_agreement(pairs: list[dict[str, Any]]) -> Fig:
    """Left: how often the student predicts what the teacher predicts (0-100). Right: the disagreements alone,
    split by who is right, on their own axis from 0 (they are a few percent and vanish on a 0-100 axis)."""
    f = new_fig("Student–teacher agreement on the test split", 2, ncols=2, w=4.4, h=0.45 * len(pairs) + 1.9)
    ax_a, ax_d = f.axes
    ys = list(range(len(pairs)))
    labels = [f"{p['student']} vs {p['teacher']}" for p in pairs]
    ax_a.barh(ys, [p["agree_right"] for p in pairs], color="#2ca02c", label="agree, both right")
    ax_a.barh(ys, [p["agree_wrong"] for p in pairs], left=[p["agree_right"] for p in pairs], color="#98df8a",
              label="agree, both wrong")
    for y, p in zip(ys, pairs):
        ax_a.annotate(f"{p['agree']:.1f}", (p["agree"], y), xytext=(3, 0), textcoords="offset points", va="center",
                      fontsize=8)
    ax_a.set_yticks(ys, labels, fontsize=8)
    ax_a.invert_yaxis()
    ax_a.set_xlim(0, 112)
    ax_a.set_xticks(range(0, 101, 20))
    ax_a.set_xlabel("same prediction, % of test images")
    ax_a.set_title("same top-1 prediction")
    parts = [("teacher_only", "disagree, teacher right", "#d62728"), ("student_only", "disagree, student right",
                                                                        "#1f77b4"),
             ("disagree_wrong", "disagree, both wrong", "#c7c7c7")]
    left = [0.0] * len(pairs)
    for k, name, c in parts:
        vals = [p[k] for p in pairs]
        ax_d.barh(ys, vals, left=left, color=c, label=name)
        left = [a + b for a, b in zip(left, vals)]
    ax_d.set_yticks(ys, [""] * len(ys))
    ax_d.invert_yaxis()
    ax_d.set_xlim(0, max(max(left) * 1.1, 1.0))
    ax_d.set_xlabel("% of test images (axis from 0)")
    ax_d.set_title("where they disagree")
    for ax in (ax_a, ax_d):
        ax.grid(axis="y", visible=False)
    f.fig.legend(*_legend_entries(ax_a, ax_d), loc="outside lower center", ncol=5)
    return f


def _legend_entries(*axes) -> tuple[list[Any], list[str]]:
    handles: list[Any] = []
    labels: list[str] = []
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    return handles, labels
