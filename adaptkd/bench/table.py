"""A bench report as a table: a rich Table for the terminal, Markdown for ``bench.md``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _variant_cell(r: dict[str, Any]) -> str:
    """The row's label, with the method and options of a ``--variant``."""
    opts = r.get("options") or {}
    if not opts:
        return r["name"]
    return f"{r['name']} ({r['method']}: {', '.join(f'{k}={v}' for k, v in opts.items())})"


def _columns(report: dict[str, Any]) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    """(header, cell) of every column of the bench table; the other clock's median and the
    method-alone columns only when measured."""

    def fmt(x: Any, spec: str = ".3f") -> str:
        return "" if x is None else format(x, spec)

    def ratio(key: str) -> Callable[[dict[str, Any]], str]:
        def cell(r: dict[str, Any]) -> str:
            if f"x_{key}" not in r:
                return ""
            return f"{r[f'x_{key}']:.3f} ({r[f'x_{key}_q1']:.3f}–{r[f'x_{key}_q3']:.3f})"
        return cell

    rows = report["results"]
    cols: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("variant", _variant_cell), ("networks (frozen→learners)", lambda r: r["setup"]),
        ("median ms", lambda r: fmt(r["median_ms"], ".1f"))]
    oc = report.get("other_clock")
    if oc and any(f"{oc}_median_ms" in r for r in rows):
        cols.append((f"{'CPU' if oc == 'cpu' else 'wall'} ms", lambda r: fmt(r.get(f"{oc}_median_ms"), ".1f")))
    cols += [("×floor (IQR)", ratio("floor")), ("×kd (IQR)", ratio("kd")), ("×dml (IQR)", ratio("dml")),
             ("×fixed (IQR)", ratio("fixed"))]
    if any("x_engine" in r for r in rows):
        cols.append(("×engine (IQR)", ratio("engine")))
    if any("alone_ms" in r for r in rows):
        cols += [("alone ms", lambda r: fmt(r.get("alone_ms"), ".2f")),
                 ("(floor+alone)/floor", lambda r: fmt(r.get("x_floor_with_alone")))]
    cols += [("peak MB", lambda r: fmt(r.get("peak_mem_mb"), ".1f")),
             ("img/s", lambda r: fmt(r.get("images_per_s"), ".1f")),
             ("target", lambda r: r.get("target", "")),
             ("met", lambda r: "" if r.get("met") is None else ("yes" if r["met"] else "no"))]
    return cols


def render_table(report: dict[str, Any]):
    """A rich Table of a bench report."""
    from rich.markup import escape
    from rich.table import Table

    mi = report["machine"]
    st = report["settings"]
    t = Table(title=f"adaptkd bench — {st['teacher']}→{st['student']}, batch {st['batch']}, {mi['device']}, "
                    f"{st['precision']}, {mi['threads']} thread(s), {mi['cpu']}")
    cols = _columns(report)
    for col, _ in cols:
        head = col.replace(" (IQR)", "")
        t.add_column(head, justify="left" if col in ("variant", "networks (frozen→learners)", "target") else "right",
                     no_wrap=col != "networks (frozen→learners)")
    for r in report["results"]:
        cells = [cell(r) for _, cell in cols]
        cells = [c.split(" (")[0] if h.endswith("(IQR)") else c for (h, _), c in zip(cols, cells)]
        cells[-1] = {"no": "NO"}.get(cells[-1], cells[-1])
        t.add_row(*[escape(c) for c in cells])
    for s in report.get("skipped", []):
        t.add_row(escape(s["name"]), escape("skipped: " + s["reason"][:90]), *[""] * (len(cols) - 2))
    return t


def markdown_table(report: dict[str, Any]) -> str:
    """The bench report as a Markdown table (ratios with their interquartile range over rounds)."""
    mi, st = report["machine"], report["settings"]
    cols = _columns(report)
    lines = [
        f"{st['teacher']}→{st['student']}, batch {st['batch']}, {st['image_size']}px, {st['num_classes']} classes, "
        f"{mi['device']}, {st['precision']}, {mi['threads']} thread(s); {mi['cpu']}, {mi['cores']} cores, "
        f"torch {mi['torch']}; {st['warmup']} warm-up + {st['steps']} timed steps per variant in blocks of "
        f"{st['block']}, interleaved; {report.get('timing')}; load average at the end {mi.get('load_avg')}.",
        "",
        "| " + " | ".join(h for h, _ in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in report["results"]:
        lines.append("| " + " | ".join(cell(r) for _, cell in cols) + " |")
    for sk in report.get("skipped", []):
        lines.append(f"| {sk['name']} | skipped: {sk['reason']} |" + " |" * (len(cols) - 2))
    return "\n".join(lines)
