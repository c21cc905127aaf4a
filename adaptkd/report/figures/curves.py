"""Training curves: accuracy per epoch, one panel per loss objective, learning rate, throughput, and any loss
weight that changes.

Each loss term is drawn unweighted in its own panel (the terms of different objectives have different scales
and meanings); a run's weighted total gets its own panel in a one-run report only — totals of runs that
minimise different objectives are never drawn on one axis. Runs of one configuration over several seeds are
one track: the mean accuracy with a ± std band, and each seed's other curves as thin lines in its colour.
"""

from __future__ import annotations

from dataclasses import dataclass

from adaptkd.report.figures.base import (
    Fig,
    finish_ax,
    maybe_log,
    new_fig,
    palette_color,
    set_accuracy_axis,
    styled,
)
from adaptkd.report.models import ModelEntry, top1
from adaptkd.report.runs import RunData
from adaptkd.report.seeds import SeedGroup, mean_std
from adaptkd.report.series import RunSeries, Series

__all__ = ["draw_curves", "learner_names"]


def learner_names(run: RunData) -> list[str]:
    return [n for n, role, net in run.networks() if role != "teacher" or net.get("trainable")]


@dataclass
class _Track:
    """One coloured line family: a learner of one run, or the student over a group of seeds."""

    label: str
    color: str
    learner: str
    members: list[tuple[RunData, RunSeries]]


def _tracks(runs: list[RunData], rss: list[RunSeries], groups: list[SeedGroup]) -> list[_Track]:
    if len(runs) == 1:
        return [_Track(name, palette_color(i), name, [(runs[0], rss[0])])
                for i, name in enumerate(learner_names(runs[0]))]
    rs_of = {id(r): rs for r, rs in zip(runs, rss)}
    return [_Track(g.label + (f" ({len(g.runs)} seeds)" if g.repeated else ""), palette_color(i), "student",
                   [(r, rs_of[id(r)]) for r in g.runs]) for i, g in enumerate(groups)]


def _mean_curve(series: list[tuple[list[float], list[float]]]) -> tuple[list[float], list[float], list[float]]:
    """Mean and sample std at the x positions all members share (epochs of runs of one configuration)."""
    common = sorted(set.intersection(*(set(xs) for xs, _ in series)))
    by_x = [dict(zip(xs, ys)) for xs, ys in series]
    stats = [mean_std([d[x] for d in by_x]) for x in common]
    return common, [s[0] if s else float("nan") for s in stats], [s[1] if s else float("nan") for s in stats]


def _terms(tracks: list[_Track]) -> list[str]:
    out: list[str] = []
    for t in tracks:
        for _, rs in t.members:
            pre = f"loss/{t.learner}/"
            out += [k[len(pre):] for k in rs.step if k.startswith(pre) and k[len(pre):] not in out]
    return out


def _same(series: list[tuple[list[float], list[float]]]) -> bool:
    return all(s == series[0] for s in series[1:])


@styled
def draw_curves(runs: list[RunData], rss: list[RunSeries], models: list[ModelEntry],
                groups: list[SeedGroup]) -> Fig:
    compare = len(runs) > 1
    tracks = _tracks(runs, rss, groups)
    terms = _terms(tracks)
    totals = not compare and any(len([k for k in rs.step if k.startswith(f"loss/{t.learner}/")]) > 1
                                 for t in tracks for _, rs in t.members)
    lrs = [(t, rs.step[f"lr/{t.learner}"]) for t in tracks for _, rs in t.members if f"lr/{t.learner}" in rs.step]
    lr_varies = any(len(set(ys)) > 1 for _, (_, ys) in lrs)
    varying_w = [(t, rs, k) for t in tracks for _, rs in t.members for k, (_, ys) in rs.step.items()
                 if k.startswith(f"weight/{t.learner}/") and len({y for y in ys if isinstance(y, float)}) > 1]
    has_ips = any("images_per_s" in rs.step for t in tracks for _, rs in t.members)
    names = ["acc", *(f"term:{x}" for x in terms), *(["total"] if totals else []), *(["lr"] if lr_varies else []),
             *(["ips"] if has_ips else []), *(["weights"] if varying_w else [])]
    f = new_fig("Training curves" + (" (overlaid)" if compare else ""), len(names), ncols=3, w=4.4, h=3.0)
    f.shared_legend = compare
    ax = dict(zip(names, f.axes))

    acc_vals: list[float] = []
    for t in tracks:
        for key, style, what in ((f"test/acc/{t.learner}", "-", "test"), (f"train/acc/{t.learner}", ":", "train")):
            got = [rs.epoch[key] for _, rs in t.members if key in rs.epoch]
            if not got:
                continue
            label = t.label if compare else f"{t.label} {what}"
            legend = not compare or what == "test"
            if len(got) == 1:
                xs, ys = got[0]
                f.line(ax["acc"], xs, ys, label, "accuracy %", key=key, color=t.color, linestyle=style,
                       marker="o" if len(xs) < 15 else None, markersize=3, legend=legend, text=f"{t.label} {what}")
                acc_vals += ys
                continue
            xs, mean, sd = _mean_curve(got)
            f.line(ax["acc"], xs, mean, label, "accuracy %", key=key, color=t.color, linestyle=style,
                   legend=legend, text=f"{t.label} {what} mean")
            f.series.append(Series(f"accuracy %: {t.label} {what} std over {len(got)} seeds", xs, sd))
            if what == "test":
                ax["acc"].fill_between(xs, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                                       color=t.color, alpha=0.2, linewidth=0)
            acc_vals += [m - s for m, s in zip(mean, sd)]
    ref = []
    for m in models:
        acc = top1(m)
        if m.role == "teacher" and acc is not None and (m.weights == "file" or compare):
            name = m.label if "teacher" in m.label else f"teacher {m.label}"
            ax["acc"].axhline(acc, color="#555555", linestyle="--", linewidth=1)
            ref.append(f"{name} {acc:.1f}")
            acc_vals.append(acc)
    finish_ax(ax["acc"], "accuracy (test solid, train dotted)" + ("\ndashed: " + ", ".join(ref) if ref else ""))
    set_accuracy_axis(ax["acc"], acc_vals, label="%")

    for term in terms:
        vals: list[float] = []
        for t in tracks:
            key = f"loss/{t.learner}/{term}"
            for j, (_, rs) in enumerate(t.members):
                if key in rs.step:
                    xs, ys = rs.step[key]
                    f.line(ax[f"term:{term}"], xs, ys, t.label, f"loss {term}", key=key, color=t.color,
                           linewidth=1.0 if len(t.members) == 1 else 0.7, legend=j == 0)
                    vals += ys
        maybe_log(ax[f"term:{term}"], vals)
        finish_ax(ax[f"term:{term}"], f"loss term: {term} (unweighted)", legend=len(tracks) > 1)
    if totals:
        vals = []
        for t in tracks:
            _, rs = t.members[0]
            if f"loss/{t.learner}" in rs.step:
                xs, ys = rs.step[f"loss/{t.learner}"]
                f.line(ax["total"], xs, ys, t.label, "weighted total", key=f"loss/{t.learner}", color=t.color)
                vals += ys
        maybe_log(ax["total"], vals)
        finish_ax(ax["total"], "weighted total (what was minimised)", legend=len(tracks) > 1)
    if lr_varies:
        if _same([s for _, s in lrs]):
            f.line(ax["lr"], *lrs[0][1], "all runs" if compare else lrs[0][0].label, "learning rate",
                   key=f"lr/{lrs[0][0].learner}", color="black")
        else:
            seen: set[str] = set()
            for t, (xs, ys) in lrs:
                f.line(ax["lr"], xs, ys, t.label, "learning rate", key=f"lr/{t.learner}", color=t.color,
                       legend=t.label not in seen)
                seen.add(t.label)
        finish_ax(ax["lr"], "learning rate", legend=len(ax["lr"].get_lines()) > 1)
    elif lrs:
        values = sorted({ys[0] for _, (_, ys) in lrs if ys})
        f.notes.append("learning rate constant: " + ", ".join(f"{v:g}" for v in values) + " (not drawn)")
    if has_ips:
        for t in tracks:
            for j, (_, rs) in enumerate(t.members):
                if "images_per_s" in rs.step:
                    xs, ys = rs.step["images_per_s"]
                    f.line(ax["ips"], xs, ys, t.label if compare else "train", "images/s", key="images_per_s",
                           color=t.color if compare else palette_color(0), linewidth=1.0, legend=j == 0)
        finish_ax(ax["ips"], "training throughput (images/s)", legend=compare)
        ax["ips"].set_ylim(bottom=0)
    if varying_w:
        seen = set()
        for j, (t, rs, k) in enumerate(varying_w):
            xs, ys = rs.step[k]
            label = (f"{t.label} " if compare else "") + k[len("weight/"):]
            f.line(ax["weights"], xs, ys, label if not compare else t.label, "loss weight", key=k,
                   color=t.color if compare else palette_color(j), legend=label not in seen)
            seen.add(label)
        wnames = sorted({k.split("/", 2)[2] for _, _, k in varying_w})
        finish_ax(ax["weights"], "loss weights that change" + (f": {', '.join(wnames)}" if compare else ""))
    return f
