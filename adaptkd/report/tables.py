"""The report's tables: runs, models (teacher vs student), ratios, per-class accuracy, agreement."""

from __future__ import annotations

from typing import Any

from adaptkd.report.document import Table, fmt, fmt_bytes, fmt_count
from adaptkd.report.models import ModelEntry, top1, top5
from adaptkd.report.runs import RunData
from adaptkd.report.seeds import ModelRow, SeedGroup, mean_std
from adaptkd.report.series import RunSeries

__all__ = ["agreement_table", "models_table", "per_class_table", "ratio_table", "runs_table", "seeds_table"]


def runs_table(runs: list[RunData], rss: list[RunSeries]) -> Table:
    rows = []
    for run, rs in zip(runs, rss):
        s = run.summary
        st = run.config.get("student", {})
        t_names = ", ".join(str(t.get("arch")) for t in run.config.get("teachers") or []) or "-"
        epoch_t = rs.epoch.get("time/epoch_s")
        ips = rs.epoch.get("images_per_s")
        balance = str(run.config.get("balance", {}).get("name", "fixed"))
        rows.append([run.label, run.method, balance, str(st.get("arch")),
                     t_names, str(run.config.get("data", {}).get("name", "?")), str(s.get("epochs", "-")),
                     fmt(s.get("best_acc")), fmt(s.get("final_acc")),
                     f"{sum(epoch_t[1]):.0f}" if epoch_t else "-",
                     f"{sum(ips[1]) / len(ips[1]):,.0f}" if ips else "-"])
    return Table("Runs", ["run", "method", "balance", "student", "teachers", "data", "epochs", "best top-1 %",
                          "final top-1 %", "train time s", "train images/s"], rows,
                 "best/final top-1: as recorded during training (summary.json).")


def _fed(m: ModelEntry) -> str:
    """What a teacher was fed when it was not the student's view as is (summary.json: teachers.<name>.input)."""
    inp = m.card.get("input")
    return f"fed {inp}" if isinstance(inp, str) and "(the data" not in inp else ""


def models_table(models: list[ModelEntry], which: str) -> Table:
    rows = []
    for m in models:
        lat = m.card.get("latency_b1") or {}
        thr = m.card.get("throughput_b64") or {}
        acc_src = "" if m.eval else (" †" if m.summary_acc is not None else "")
        rows.append([
            m.label, m.role, m.arch, fmt(top1(m)) + acc_src, fmt(top5(m)) + acc_src, fmt_count(m.card.get("params")),
            fmt_bytes(m.card.get("size_bytes")), fmt_count(m.card.get("flops")),
            f"{lat['median_ms']:.3f} ms ({lat.get('threads', '?')} thr)" if lat.get("median_ms") else "-",
            f"{thr['images_per_s']:,.0f} img/s ({thr.get('threads', '?')} thr)" if thr.get("images_per_s") else "-",
            "; ".join(x for x in (m.note, _fed(m)) if x),
        ])
    sources = sorted({m.card_source for m in models if m.card.get("latency_b1")})
    cap = (f"top-1/top-5: re-evaluated on the whole test split from {which}.pt for learners and the configured "
           "checkpoint for frozen teachers († = not re-evaluated: final value from summary.json). size: bytes of "
           "torch.save(state_dict). FLOPs per image: torch.utils.flop_counter (a multiply-add counts 2). CPU latency "
           "at batch 1 and throughput at batch 64: torch.utils.benchmark, median of ≥ 10 timed blocks, threads "
           "stated; summary.json: measured at the end of training (blocked_autorange), this report: all models "
           f"timed together in interleaved rounds (source: {', '.join(sources) or 'not measured'}).")
    return Table("Models: teacher vs student", ["model", "role", "arch", "top-1 %", "top-5 %", "params", "size",
                                                "FLOPs/image", "CPU latency b1", "CPU throughput b64", "note"],
                 rows, cap)


def ratio_table(models: list[ModelEntry]) -> Table | None:
    teachers = [m for m in models if m.role == "teacher"]
    if not teachers:
        return None
    rows = []
    for s in models:
        if s.role == "teacher":
            continue
        own = [t for t in teachers if s.run.label in t.teacher_of] or teachers[:1]
        t = own[0]
        ts, tt = top1(s), top1(t)

        def ratio(a: Any, b: Any) -> str:
            return f"{a / b:.1f}×" if a and b else "-"

        lt = (t.card.get("latency_b1") or {}).get("median_ms")
        ls = (s.card.get("latency_b1") or {}).get("median_ms")
        rows.append([s.label, t.label, f"{ts - tt:+.2f}" if ts is not None and tt is not None else "-",
                     ratio(t.card.get("params"), s.card.get("params")),
                     ratio(t.card.get("size_bytes"), s.card.get("size_bytes")),
                     ratio(t.card.get("flops"), s.card.get("flops")), ratio(lt, ls)])
    if not rows:
        return None
    return Table("Student vs teacher", ["student", "teacher", "Δ top-1 (points)", "× fewer params", "× smaller file",
                                        "× fewer FLOPs", "× faster (b1)"], rows,
                 "Ratios are teacher / student: how much the student saves; Δ top-1 is student − teacher.")


def per_class_table(models: list[ModelEntry]) -> Table:
    ev = [m for m in models if m.eval]
    nc = len(ev[0].evaluation["per_class"])
    names = ev[0].evaluation.get("class_names") or [str(c) for c in range(nc)]
    counts = [int((ev[0].evaluation["y"] == c).sum()) for c in range(nc)]
    rows = [[str(names[c]) if c < len(names) else str(c), str(counts[c])]
            + [fmt(m.evaluation["per_class"][c], 1) for m in ev] for c in range(nc)]
    return Table("Per-class accuracy %", ["class", "images"] + [m.label for m in ev], rows)


def agreement_table(pairs: list[dict[str, Any]]) -> Table:
    rows = [[p["student"], p["teacher"] + ("" if p["own_teacher"] else " (not its teacher)"), fmt(p["agree"]),
             fmt(p["agree_right"]), fmt(p["teacher_only"]), fmt(p["student_only"]), fmt(p["disagree_wrong"]),
             str(p["n"])] for p in pairs]
    return Table("Agreement with the teacher", ["student", "teacher", "same prediction %", "both right %",
                                                "only teacher right %", "only student right %",
                                                "disagree, both wrong %", "images"], rows,
                 "Top-1 predictions on the test split. A student that disagrees mostly where the teacher is right has "
                 "room to learn more from it.")




def seeds_table(groups: list[SeedGroup], rows: list[ModelRow]) -> Table | None:
    """Mean ± sample std over the seeds of each repeated configuration (None when no configuration repeats)."""
    if not any(g.repeated for g in groups):
        return None

    def pm(st: tuple[float, float, int] | None) -> str:
        return f"{st[0]:.2f} ± {st[1]:.2f}" if st else "-"

    out = []
    for r in rows:
        if len(r.entries) < 2:
            continue
        seeds = [e.run.config.get("run", {}).get("seed") for e in r.entries]
        t1 = r.stats(top1)
        vals = sorted(v for v in (top1(e) for e in r.entries) if v is not None)
        out.append([r.label, r.role, r.arch, str(len(r.entries)), ", ".join(map(str, seeds)), pm(t1),
                    f"{vals[0]:.2f} – {vals[-1]:.2f}" if vals else "-", pm(r.stats(top5)),
                    pm(mean_std([e.run.summary.get("best_acc") for e in r.entries]))])
    return Table("Across seeds", ["model", "role", "arch", "runs", "seeds", "top-1 % mean ± std",
                                  "top-1 % min – max", "top-5 % mean ± std", "best top-1 % during training"], out,
                 "Runs of the same configuration that differ only in run.seed, grouped; std is the sample standard "
                 "deviation (n − 1). With few seeds the spread itself is uncertain: read ± as a scale, not a bound.")
