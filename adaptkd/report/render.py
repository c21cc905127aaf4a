"""Renderers over the report's sections: the HTML page, the Markdown file and the terminal (rich)."""

from __future__ import annotations

import base64
import html
from typing import Any

from adaptkd.report.document import FigureBlock, Report, Section, Table, series_row

__all__ = ["print_report", "render_html", "render_markdown"]


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1320px;color:#222;
padding:0 16px;line-height:1.4}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
h3{font-size:15px;margin:14px 0 6px}.meta{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}tr:nth-child(even) td{background:#fafafa}
.cap{color:#555;font-size:12px;max-width:1100px}figure{display:inline-block;vertical-align:top;margin:12px 18px 22px 0;
max-width:100%}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:12px;max-width:640px}.note{background:#fff8e1;padding:6px 10px;font-size:13px}
details{font-size:12px;color:#444}code{font-size:12px}
"""


def render_html(report_title: str, meta: list[str], sections: list[Section]) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{e(report_title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{e(report_title)}</h1>"]
    out += [f'<div class="meta">{e(m)}</div>' for m in meta]
    for sec in sections:
        out.append(f"<h2>{e(sec.title)}</h2>")
        for b in sec.blocks:
            if isinstance(b, Table):
                out.append(f"<h3>{e(b.title)}</h3><table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in b.columns)
                           + "</tr></thead><tbody>")
                out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b.rows]
                out.append("</tbody></table>")
                if b.caption:
                    out.append(f'<div class="cap">{e(b.caption)}</div>')
            elif isinstance(b, FigureBlock):
                src = "data:image/png;base64," + base64.b64encode(b.data).decode("ascii")
                out.append(f'<figure><img src="{src}" alt="{e(b.title)}" title="{e(b.file)}">'
                           f"<figcaption><b>{e(b.title)}.</b> {e(b.caption)}</figcaption>")
                if b.series:
                    out.append("<details><summary>numbers</summary><table><tr><th>series</th><th>trend</th>"
                               "<th>first</th>"
                               "<th>min</th><th>max</th><th>last</th></tr>")
                    out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in series_row(s)) + "</tr>" for s in b.series]
                    out.append("</table></details>")
                out.append("</figure>")
            else:
                out.append(f'<p class="note">{e(str(b))}</p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _md_cell(c: str) -> str:
    return str(c).replace("|", "\\|").replace("\n", " ")


def _md_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md_cell(c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return out


def render_markdown(report_title: str, meta: list[str], sections: list[Section]) -> str:
    out = [f"# {report_title}", ""] + [f"{m}  " for m in meta] + [""]
    for sec in sections:
        out += [f"## {sec.title}", ""]
        for b in sec.blocks:
            if isinstance(b, Table):
                out += [f"### {b.title}", ""] + _md_table(b.columns, b.rows) + [""]
                if b.caption:
                    out += [f"_{b.caption}_", ""]
            elif isinstance(b, FigureBlock):
                out += [f"### {b.title}", "", f"![{b.title}]({b.file})", "", f"_{b.caption}_", ""]
                if b.series:
                    out += _md_table(["series", "trend", "first", "min", "max", "last"],
                                     [series_row(s) for s in b.series])
                    out.append("")
            else:
                out += [f"> {b}", ""]
    return "\n".join(out)


def print_report(report: Report, console: Any = None) -> None:
    """The report's tables and figures (as sparkline tables) on a terminal, with rich."""
    from rich import box
    from rich.console import Console
    from rich.table import Table as RTable

    con = console or Console()
    con.rule(f"[bold]{report.title}")
    for sec in report.sections:
        con.print(f"\n[bold underline]{sec.title}[/]")
        for b in sec.blocks:
            if isinstance(b, Table):
                t = RTable(title=b.title, caption=b.caption or None, box=box.SIMPLE_HEAVY, title_justify="left")
                for i, c in enumerate(b.columns):
                    t.add_column(c, justify="left" if i == 0 else "right", overflow="fold")
                for r in b.rows:
                    t.add_row(*[str(c) for c in r])
                con.print(t)
            elif isinstance(b, FigureBlock) and not b.series:
                con.print(f"[dim]figure: {b.title} ({b.file}); its numbers are in the tables[/]")
            elif isinstance(b, FigureBlock):
                t = RTable(title=f"{b.title}  [dim]({b.file})[/]", box=box.SIMPLE, title_justify="left")
                for i, c in enumerate(["series", "trend", "first", "min", "max", "last"]):
                    t.add_column(c, justify="left" if i < 2 else "right", overflow="fold")
                for s in b.series:
                    t.add_row(*series_row(s))
                con.print(t)
            else:
                con.print(f"[yellow]{b}[/]")
    con.print(f"\nreport: {report.html}  (markdown: {report.markdown})")


