"""Training curves: accuracy per epoch, loss terms, learning rate, throughput, loss weights that change."""

from __future__ import annotations

from adaptkd.report.figures.base import (
    Fig,
    finish_ax,
    maybe_log,
    new_fig,
    palette_color,
    styled,
)
from adaptkd.report.models import ModelEntry, top1
from adaptkd.report.runs import RunData
from adaptkd.report.series import RunSeries

__all__ = ["draw_curves"]


def learner_names(run: RunData) -> list[str]:
    return [n for n, role, net in run.networks() if role != "teacher" or net.get("trainable")]


@styled
def draw_curves(runs: list[RunData], rss: list[RunSeries], models: list[ModelEntry]) -> Fig:
    compare = len(runs) > 1
    varying_w: list[tuple[int, str]] = []
    for ri, rs in enumerate(rss):
        for k, (_, ys) in rs.step.items():
            if k.startswith("weight/") and len({y for y in ys if isinstance(y, float)}) > 1:
                varying_w.append((ri, k))
    panels = 4 + (1 if varying_w else 0)
    f = new_fig("Training curves" + (" (overlaid)" if compare else ""), panels, ncols=3 if panels > 4 else 2,
                 w=4.6, h=3.0)
    ax_acc, ax_loss, ax_lr, ax_ips = f.axes[:4]
    loss_vals: list[float] = []
    for ri, (run, rs) in enumerate(zip(runs, rss)):
        learners = ["student"] if compare else learner_names(run)
        for li, name in enumerate(learners):
            color = palette_color(ri if compare else li)
            lab = run.label if compare else name
            for key, style, suffix in ((f"test/acc/{name}", "-", "test"), (f"train/acc/{name}", ":", "train")):
                if key in rs.epoch:
                    xs, ys = rs.epoch[key]
                    f.line(ax_acc, xs, ys, f"{lab} {suffix}", "accuracy %", key=key, color=color, linestyle=style,
                           marker="o" if len(xs) < 15 else None, markersize=3)
            if compare:
                key = f"loss/{name}"
                if key in rs.step:
                    xs, ys = rs.step[key]
                    f.line(ax_loss, xs, ys, lab, "total loss", key=key, color=color)
                    loss_vals += ys
            else:
                terms = [k for k in rs.step if k.startswith(f"loss/{name}/")]
                for ti, key in enumerate(terms):
                    xs, ys = rs.step[key]
                    f.line(ax_loss, xs, ys, key[len("loss/"):], "loss", key=key, color=palette_color(li * 3 + ti + 1),
                           linewidth=1.0)
                    loss_vals += ys
                if f"loss/{name}" in rs.step:
                    xs, ys = rs.step[f"loss/{name}"]
                    f.line(ax_loss, xs, ys, f"{name} total (weighted)", "loss", key=f"loss/{name}", color="black",
                           linewidth=1.6)
                    loss_vals += ys
            if f"lr/{name}" in rs.step:
                xs, ys = rs.step[f"lr/{name}"]
                f.line(ax_lr, xs, ys, lab, "learning rate", key=f"lr/{name}", color=color)
        if "images_per_s" in rs.step:
            xs, ys = rs.step["images_per_s"]
            f.line(ax_ips, xs, ys, run.label if compare else "train", "images/s", key="images_per_s",
                   color=palette_color(ri), linewidth=1.0)
    for m in models:
        if m.role == "teacher" and top1(m) is not None and (m.weights == "file" or compare):
            ax_acc.axhline(top1(m), color="#555555", linestyle="--", linewidth=1)
            name = m.label if "teacher" in m.label else f"teacher {m.label}"
            ax_acc.annotate(f"{name} {top1(m):.1f}", (0, top1(m)), xycoords=("axes fraction", "data"),
                            xytext=(2, 2), textcoords="offset points", fontsize=7, color="#555555")
    finish_ax(ax_acc, "accuracy (test solid, train dotted)", ylabel="%")
    maybe_log(ax_loss, [v for v in loss_vals if isinstance(v, float)])
    finish_ax(ax_loss, "training loss" if not compare else "total training loss (weighted)")
    finish_ax(ax_lr, "learning rate")
    finish_ax(ax_ips, "training throughput (images/s)")
    if varying_w:
        ax_w = f.axes[4]
        for j, (ri, k) in enumerate(varying_w):
            xs, ys = rss[ri].step[k]
            f.line(ax_w, xs, ys, (f"{runs[ri].label} " if compare else "") + k[len("weight/"):], "loss weight",
                   key=k, color=palette_color(j))
        finish_ax(ax_w, "loss weights that change during training")
    return f


# -- adaptive signals ------------------------------------------------------------------------------


