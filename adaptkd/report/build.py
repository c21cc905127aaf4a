"""``build_report``: read the runs, evaluate and measure the models, draw the figures, write the page."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adaptkd.report.document import FigureBlock, Report, Section
from adaptkd.report.figures import signal_figures
from adaptkd.report.figures.base import render_figure
from adaptkd.report.figures.curves import draw_curves
from adaptkd.report.figures.summary import (
    draw_accuracy,
    draw_agreement,
    draw_per_class,
    draw_tradeoff,
)
from adaptkd.report.models import (
    agreement_pairs,
    collect_models,
    evaluate_models,
    measure_models,
    top1,
    top5,
)
from adaptkd.report.output import SAFE_NAME, Writer, old_files, prepare_out
from adaptkd.report.render import render_html, render_markdown
from adaptkd.report.runs import ReportError, load_run, run_labels
from adaptkd.report.seeds import model_rows, seed_groups
from adaptkd.report.series import run_series
from adaptkd.report.tables import (
    agreement_table,
    models_table,
    per_class_table,
    ratio_table,
    runs_table,
    seeds_table,
)

__all__ = ["MAX_PER_CLASS", "build_report"]

MAX_PER_CLASS = 20


def build_report(
    runs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    which: str = "best",
    evaluate: bool = True,
    measure: bool | str = "auto",
    device: str = "cpu",
    networks: dict[str, Any] | None = None,
    title: str | None = None,
    threads: int | None = None,
) -> Report:
    """Write the report of ``runs`` (one run folder, or several for a comparison) and return it.

    Args:
        out: output folder; default ``<run>/report`` for one run (required for several).
        which: checkpoint the learners are re-evaluated from (``best`` or ``last``).
        evaluate: re-evaluate every network on the test split (per-class accuracy, agreement);
            otherwise accuracy comes from ``summary.json``.
        measure: ``"missing"`` (or True): measure FLOPs/latency/throughput the run did not record
            (``run.latency=false``); ``"all"``: re-measure latency and throughput of every model
            now, in one session, so the rows are comparable (runs measured at different times on
            a busy machine are not); ``"none"`` (or False); ``"auto"`` (default): ``"all"`` for
            a comparison of several runs, ``"missing"`` for one run.
        device: where the evaluation runs (latency is always measured on the CPU).
        threads: CPU threads for the batch-64 throughput this report measures (default: torch's
            setting; batch-1 latency always uses 1 thread). Values recorded by the run are kept.
        networks: ``{network name: nn.Module}`` for networks that cannot be rebuilt from the
            checkpoint (custom modules passed to :func:`adaptkd.train`); one run only.
    """
    t0 = time.perf_counter()
    paths = [runs] if isinstance(runs, (str, os.PathLike)) else list(runs)
    if not paths:
        raise ReportError("no run folder given")
    if which not in ("best", "last"):
        raise ReportError(f"which must be 'best' or 'last', got {which!r}")
    if networks and len(paths) != 1:
        raise ReportError("networks= is supported for a report of one run only")
    resolved = [Path(os.path.expanduser(str(p))) for p in paths]
    run_list = [load_run(p, lab) for p, lab in zip(resolved, run_labels(resolved))]
    out_dir = prepare_out(run_list, out)
    w = Writer(out_dir)
    old = old_files(out_dir)
    notes: list[str] = []
    import torch

    models = collect_models(run_list, which)
    if evaluate:
        evaluate_models(models, which, device, networks, notes)
    mode = {True: "missing", False: "none"}.get(measure, measure) if isinstance(measure, bool) else measure
    if mode == "auto":
        mode = "all" if len(run_list) > 1 else "missing"
    if mode not in ("missing", "all", "none"):
        raise ReportError(f"measure must be 'auto', 'missing', 'all' or 'none', got {measure!r}")
    if mode != "none":
        measure_models(models, which, networks, threads, remeasure=mode == "all")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        if any(m.card_source != "summary.json" for m in models) and load > (os.cpu_count() or 1):
            notes.append(f"the machine was busy while the report timed the models (load average {load:.1f} on "
                         f"{os.cpu_count()} CPUs): absolute latencies are inflated and noisy; the models were timed "
                         "in interleaved rounds, so their ratios are the figures to trust")
    rss = [run_series(r) for r in run_list]
    groups = seed_groups(run_list)
    rows = model_rows(models, groups)
    figures: list[Path] = []
    sections: list[Section] = []

    sec = Section("Summary")
    sec.blocks.append(runs_table(run_list, rss))
    sec.blocks.append(models_table(models, which))
    ratio = ratio_table(models)
    if ratio:
        sec.blocks.append(ratio)
    across = seeds_table(groups, rows)
    if across:
        sec.blocks.append(across)
    if any(top1(m) is not None for m in models):
        sec.blocks.append(render_figure(draw_accuracy(rows), w, "accuracy.png",
                                        "Accuracy of every model on the test split (top-5 drawn for more than 10 "
                                        "classes); bars start at 0; several seeds: mean, ± std whisker, a dot per "
                                        "seed.", figures))
    trade = draw_tradeoff(rows)
    if trade is not None:
        sec.blocks.append(render_figure(trade, w, "tradeoff.png", "What each model costs for its accuracy (the "
                                        "accuracy axis starts at the floor its label states).", figures))
    sections.append(sec)

    ev = [m for m in models if m.eval]
    if ev and len(ev[0].evaluation["per_class"]) <= MAX_PER_CLASS and len({m.data_key for m in ev}) == 1:
        sec = Section("Per-class accuracy")
        sec.blocks.append(render_figure(draw_per_class(rows), w, "per_class.png",
                                  "Accuracy per class: where the student falls behind its teacher.", figures))
        sec.blocks.append(per_class_table(models))
        sections.append(sec)
    elif ev and len(ev[0].evaluation["per_class"]) > MAX_PER_CLASS:
        notes.append(f"per-class accuracy is shown for datasets of at most {MAX_PER_CLASS} classes")

    pairs = agreement_pairs(models)
    if pairs:
        sec = Section("Agreement between student and teacher")
        sec.blocks.append(render_figure(draw_agreement(pairs), w, "agreement.png",
                                  "How often each student predicts what the teacher predicts, split by who is right.",
                                  figures))
        sec.blocks.append(agreement_table(pairs))
        sections.append(sec)

    sec = Section("Training")
    if any(r.records for r in run_list):
        sec.blocks.append(render_figure(draw_curves(run_list, rss, models, groups), w, "curves.png",
                                        "Accuracy per epoch (axis floor stated), each loss term unweighted in its own "
                                        "panel, learning rate, training throughput and any loss weight that changes "
                                        "(warm-ups, balancers); several seeds: mean ± std band.", figures))
    else:
        sec.blocks.append("no metrics.jsonl records: the run has not logged anything yet")
    sections.append(sec)

    sec = Section("Adaptive signals")
    sig_blocks, plotted = signal_figures(run_list, rss, w, figures)
    found = {r.label: sorted(set(rs.signals) | set(rs.epoch_means.values())) for r, rs in zip(run_list, rss)}
    if sig_blocks:
        sec.blocks += sig_blocks
    else:
        sec.blocks.append("this run logged no adaptive signals (its method has fixed weights and no adaptive state)"
                          if len(run_list) == 1 else "these runs logged no adaptive signals")
    sections.append(sec)
    missing = {lab: sorted(set(found[lab]) - set(plotted.get(lab, []))) for lab in found}
    for lab, keys in missing.items():
        if keys:
            notes.append(f"{lab}: signals not plotted: {', '.join(keys)}")
    if notes:
        sections[0].blocks.insert(0, "Notes: " + " | ".join(notes))

    report_title = title or ("adaptkd report — " + (run_list[0].label if len(run_list) == 1
                                                     else f"comparison of {len(run_list)} runs"))
    meta = [f"runs: {', '.join(f'{r.label} ({r.method})' for r in run_list)}",
            (f"generated {time.strftime('%Y-%m-%d %H:%M')} by adaptkd with torch {torch.__version__} on "
            f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
            f"{torch.get_num_threads()} torch threads")]
    html_path = w.text("report.html", render_html(report_title, meta, sections))
    md_path = w.text("report.md", render_markdown(report_title, meta, sections))
    manifest = {
        "title": report_title, "runs": [str(r.path) for r in run_list],
        "figures": [{"file": b.file, "title": b.title, "keys": b.keys} for s in sections for b in s.blocks
                    if isinstance(b, FigureBlock)],
        "signals": found, "plotted": plotted, "notes": notes, "seconds": round(time.perf_counter() - t0, 2),
        "models": [{"label": m.label, "role": m.role, "arch": m.arch, "top1": top1(m), "top5": top5(m),
                    "evaluated": m.eval is not None, **{k: m.card.get(k) for k in ("params", "size_bytes", "flops",
                                                                                   "latency_b1", "throughput_b64")}}
                   for m in models],
        "agreement": pairs,
    }
    man_path = w.text("report.json", json.dumps(manifest, indent=2, default=str))
    for name in old - set(w.written):
        stale = out_dir / name
        if SAFE_NAME.match(name) and stale.is_file() and not stale.is_symlink():
            stale.unlink()
    return Report(title=report_title, out=out_dir, html=html_path, markdown=md_path, manifest=man_path,
                  sections=sections, figures=figures, signals=found, plotted=plotted, notes=notes)


