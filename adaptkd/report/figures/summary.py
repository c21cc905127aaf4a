"""Summary figures: accuracy of every model, accuracy against cost, per-class accuracy, agreement."""

from __future__ import annotations

import math
from typing import Any

from adaptkd.report.figures.base import Fig, new_fig, palette_color, styled
from adaptkd.report.models import ModelEntry, top1, top5

__all__ = ["draw_accuracy", "draw_agreement", "draw_per_class", "draw_tradeoff"]


@styled
def draw_accuracy(models: list[ModelEntry]) -> Fig:
    f = new_fig("Accuracy on the test split", 1, ncols=1, w=max(4.6, 0.9 * len(models) + 2.0), h=3.4)
    ax = f.axes[0]
    xs = list(range(len(models)))
    t1 = [top1(m) for m in models]
    t5 = [top5(m) for m in models]
    colors = ["#555555" if m.role == "teacher" else palette_color(i) for i, m in enumerate(models)]
    ax.bar([x - 0.2 for x in xs], [v if v is not None else 0 for v in t1], width=0.4, color=colors, label="top-1")
    ax.bar([x + 0.2 for x in xs], [v if v is not None else 0 for v in t5], width=0.4, color=colors, alpha=0.45,
           hatch="//", label="top-5")
    for x, v in zip(xs, t1):
        if v is not None:
            ax.annotate(f"{v:.1f}", (x - 0.2, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs, [f"{m.label}\n({m.role}, {m.arch})" for m in models], fontsize=8)
    lo = min([v for v in t1 if v is not None] or [0])
    ax.set_ylim(max(0.0, lo - 15), 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("top-1 (solid) and top-5 (hatched); teachers in grey")
    return f


@styled
def draw_per_class(models: list[ModelEntry]) -> Fig:
    ev = [m for m in models if m.eval]
    nc = len(ev[0].eval["per_class"])
    names = ev[0].eval.get("class_names") or [str(c) for c in range(nc)]
    f = new_fig("Per-class accuracy (test split)", 1, ncols=1, w=max(6.0, 0.55 * nc * max(1, len(ev)) / 2 + 3), h=3.4)
    ax = f.axes[0]
    width = 0.8 / len(ev)
    for i, m in enumerate(ev):
        pc = m.eval["per_class"]
        xs = [c + (i - (len(ev) - 1) / 2) * width for c in range(nc)]
        color = "#555555" if m.role == "teacher" else palette_color(i)
        ax.bar(xs, [0 if not math.isfinite(v) else v for v in pc], width=width, color=color, label=m.label,
               alpha=0.6 if m.role == "teacher" else 1.0)
    ax.set_xticks(range(nc), names[:nc], fontsize=8, rotation=0 if nc <= 12 else 45)
    ax.set_xlabel("class")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.legend(loc="lower right", ncol=min(len(ev), 4))
    return f


@styled
def draw_tradeoff(models: list[ModelEntry]) -> Fig | None:
    pts = []
    for i, m in enumerate(models):
        acc = top1(m)
        lat = (m.card.get("latency_b1") or {}).get("median_ms")
        flops = m.card.get("flops")
        if acc is not None and (lat or flops):
            pts.append((m, i, acc, lat, flops))
    if not pts:
        return None
    use_lat = all(p[3] for p in pts)
    f = new_fig("Accuracy vs cost", 1, ncols=1, w=6.0, h=3.6)
    ax = f.axes[0]
    for m, i, acc, lat, flops in pts:
        x = lat if use_lat else flops
        size = 30 + 200 * (m.card.get("params", 0) or 0) / max(max((p[0].card.get("params", 0) or 0) for p in pts), 1)
        ax.scatter([x], [acc], s=size, color="#555555" if m.role == "teacher" else palette_color(i), alpha=0.8,
                   edgecolors="black", linewidths=0.5)
        ax.annotate(m.label, (x, acc), xytext=(6, 4), textcoords="offset points", fontsize=8)
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.2)
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    xs = [p[3] if use_lat else p[4] for p in pts]
    if max(xs) / max(min(xs), 1e-12) < 8:  # within ~1 decade: label the minor ticks too
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("CPU latency at batch 1 (ms, 1 thread, log scale)" if use_lat else "FLOPs per image (log scale)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("up and left is better; marker area ∝ parameters")
    return f


@styled
def draw_agreement(pairs: list[dict[str, Any]]) -> Fig:
    f = new_fig("Student–teacher agreement on the test split", 1, ncols=1, w=7.5, h=0.45 * len(pairs) + 1.8)
    ax = f.axes[0]
    parts = [("agree, both right", "#2ca02c"), ("agree, both wrong", "#98df8a"), ("disagree, teacher right", "#d62728"),
             ("disagree, student right", "#1f77b4"), ("disagree, both wrong", "#c7c7c7")]
    keys = ["agree_right", "agree_wrong", "teacher_only", "student_only", "disagree_wrong"]
    labels = [f"{p['student']} vs {p['teacher']}" for p in pairs]
    left = [0.0] * len(pairs)
    for (name, color), k in zip(parts, keys):
        vals = [p[k] for p in pairs]
        ax.barh(range(len(pairs)), vals, left=left, color=color, label=name)
        left = [a + b for a, b in zip(left, vals)]
    labels = [f"{lab}\n{p['agree']:.1f}% same prediction" for lab, p in zip(labels, pairs)]
    ax.set_yticks(range(len(pairs)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of test images")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3)
    return f


