"""One self-contained HTML report (and a Markdown table export) for a folder of experiment results.

:func:`write_report` scans ``OUT`` for experiment folders (``OUT`` itself and any sub-folder holding
``config.json``, ``summary.json`` or ``results.csv``; sweep folders named ``runs`` are skipped) and writes
``OUT/report.html``: a table of contents, then per experiment its description, config, summary values, results
table (tidy results aggregated over ``seed``: mean ± sample std, n) and package versions, with every PNG embedded as
a base64 data URI, so the file can be mailed or archived alone. ``OUT/results.md`` holds the same results tables in
Markdown. Both are written atomically.
"""

from __future__ import annotations

import base64
import datetime
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import atomic_write
from .sections import Section, flatten, paper_order, scan
from .tables import (
    CLAIM_COLUMNS,
    PROTOCOLS,
    claim_rows,
    claims_section_html,
    claims_table_html,
    format_value,
    is_numeric_column,
    markdown_table,
    pivot_html,
    pivot_markdown,
    pivot_tables,
    results_table,
)

# ---------------------------------------------------------------------------------------------------------------
# HTML


CSS = """
body{font:15px/1.5 -apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#222;margin:0;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px;background:#fff;box-shadow:0 0 8px #0001}
h1{margin:0 0 4px;font-size:26px} h2{margin:40px 0 6px;padding-top:8px;border-top:2px solid #e5e5e5;font-size:21px}
h3{font-size:15px;margin:18px 0 6px;color:#444} .meta,.note{color:#666;font-size:13px} .desc{margin:4px 0 10px}
nav ol{columns:2;margin:8px 0;padding-left:22px} nav a{text-decoration:none;color:#0b5cad}
table{border-collapse:collapse;font-size:13px;margin:4px 0 8px} th,td{border:1px solid #ddd;padding:3px 8px}
th{background:#f0f3f7;text-align:left} tr:nth-child(even) td{background:#fafbfc} td.num{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap} .kv td:first-child{font-family:monospace;color:#333}
.figs{display:flex;flex-wrap:wrap;gap:14px} figure{margin:0;border:1px solid #e5e5e5;padding:6px;background:#fff}
figure img{max-width:100%;height:auto;display:block} figcaption{font-size:12px;color:#666;text-align:center}
.problem{color:#a00} .claims td{white-space:normal} .v-agrees{color:#070;font-weight:600}
.v-disagrees{color:#b00;font-weight:600} details summary{cursor:pointer;color:#555;font-size:13px}
.pivot b{color:#000} details.full{margin-top:12px}
.headline{font-size:16px;font-weight:600;margin:10px 0;padding:8px 12px;background:#f3f7fc;
border-left:4px solid #0b5cad}
.scroll{max-height:560px;overflow:auto;display:inline-block;max-width:100%} .scroll th{position:sticky;top:0}
"""

# Records on <body> how many images decoded, how many tables have no filled cell and how many rows the claims table
# has (read by the headless-browser test; harmless otherwise).
SCRIPT = """window.addEventListener("load", function () {
  var im = document.images, ok = 0, empty = 0, tables = document.getElementsByTagName("table");
  for (var i = 0; i < im.length; i++) { if (im[i].complete && im[i].naturalWidth > 0) ok++; }
  for (var j = 0; j < tables.length; j++) {
    var cells = tables[j].querySelectorAll("tbody td"), filled = 0;
    for (var k = 0; k < cells.length; k++) { if (cells[k].textContent.trim()) filled++; }
    if (!filled) empty++;
  }
  document.body.setAttribute("data-images-loaded", ok + "/" + im.length);
  document.body.setAttribute("data-empty-tables", String(empty));
  document.body.setAttribute("data-claim-rows", String(document.querySelectorAll("#claims tbody tr").length));
});"""


def _html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], cls: str = "") -> str:
    num = {c for c in columns if is_numeric_column(rows, c)}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if c in num else ''}>{html.escape(format_value(r.get(c, '')))}</td>" for c in columns
        )
        + "</tr>"
        for r in rows
    )
    return f"<table{f' class={cls}' if cls else ''}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv_table(d: Mapping[str, Any]) -> str:
    return _html_table([{"key": k, "value": v} for k, v in flatten(d).items()], ["key", "value"], "kv")


def _figure(png: Path, root: Path) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    name = html.escape(png.relative_to(root).as_posix())
    return f'<figure><img src="data:image/png;base64,{data}" alt="{name}"><figcaption>{name}</figcaption></figure>'


def _ordered_figures(s: Section) -> list[Path]:
    """The section's PNGs with the ones its summary lists under ``figures`` first, in that order (the first is the
    experiment's main figure), then the rest by path."""
    named = s.summary.get("figures") if isinstance(s.summary.get("figures"), list) else []
    rank = {str(name): i for i, name in enumerate(named)}
    return sorted(s.figures, key=lambda p: rank.get(p.relative_to(s.path).as_posix(), len(rank)))


def _headline(s: Section) -> str:
    """The one-sentence answer an experiment states in ``summary.json["headline"]`` ("" for none)."""
    text = s.summary.get("headline")
    return text.strip() if isinstance(text, str) else ""


def _failure_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The "failed runs" table of a sweep: ``summary.json["failures"]`` (written by the sweep experiments)."""
    failures = summary.get("failures") if isinstance(summary.get("failures"), list) else []
    return [{"name": f.get("name", ""), "reason": f.get("reason", ""), "last good epoch": f.get("last_good_epoch", ""),
             "attempts": f.get("attempts", "")} for f in failures if isinstance(f, Mapping)]  # fmt: skip


def _section_html(s: Section, root: Path, max_rows: int) -> tuple[str, str]:
    """(HTML, Markdown) of one section: its claims and verdicts, the pivots, the main figure then the others;
    the full results table, summary values, config and versions last, collapsed."""
    h = [f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>']
    md = [f"## {s.title}\n"]  # the headline is stated once, at the top of the page (write_report)
    meta = [f"folder <code>{html.escape(s.rel or '.')}</code>"] + (
        [f"preset <b>{html.escape(s.preset)}</b>"] if s.preset else []
    )
    if s.runs:
        meta.append(f"{s.runs} finished runs in <code>runs/</code>")
    h.append(f'<div class="meta">{" · ".join(meta)}</div>')
    if s.description:
        h.append(f'<p class="desc">{html.escape(s.description)}</p>')
        md.append(f"{s.description}\n")
    h += [f'<p class="problem">{html.escape(p)}</p>' for p in s.problems]
    failed = _failure_rows(s.summary)
    if failed:
        cols = ["name", "reason", "last good epoch", "attempts"]
        note = f"{len(failed)} of {s.summary.get('runs_total', '?')} runs failed; selection and tables leave them out"
        h.append(f'<h3 class="problem">Failed runs</h3><p class="note">{html.escape(note)}</p>'
                 + _html_table(failed, cols, "failed"))  # fmt: skip
        md.append(f"**Failed runs** ({note})\n\n" + markdown_table(failed, cols))
    claims = [{k: v for k, v in r.items() if k != "experiment"} for r in claim_rows([(s.title, s.summary)])]
    if claims:
        h.append(claims_table_html(claims, CLAIM_COLUMNS[1:]))
        md.append(markdown_table(claims, CLAIM_COLUMNS[1:]))
    pivots = pivot_tables(s.summary.get("table") or []) if isinstance(s.summary.get("table"), list) else []
    if pivots:
        protocols = "; ".join(f"{k}: {v}" for k, v in PROTOCOLS.items())
        h.append(f'<p class="note">selected runs, mean ± std over seeds, best per row in bold ({protocols})</p>')
        h += [pivot_html(pv) for pv in pivots]
        md += [pivot_markdown(pv) for pv in pivots]
    if s.figures:
        h.append('<div class="figs">' + "".join(_figure(p, root) for p in _ordered_figures(s)) + "</div>")
    details = []
    if s.results is not None:
        table, cols, note = results_table(s.results, max_rows=max_rows)
        details.append("<h3>Results</h3>" + (f'<p class="note">{html.escape(note)}</p>' if note else ""))
        details.append(
            f'<div class="scroll">{_html_table(table, cols)}</div>'
            if table
            else '<p class="note">results.csv has no rows</p>'
        )
        if table:
            md.append(markdown_table(table, cols) + (f"\n*{note}*\n" if note else ""))
    if s.summary:
        details.append("<h3>Summary</h3>" + _kv_table({k: v for k, v in s.summary.items() if k != "headline"}))
    if s.config:
        details.append("<h3>Config</h3>" + _kv_table(s.config))
    if s.versions:
        details.append("<h3>Versions</h3>" + _kv_table(s.versions))
    if details:
        what = ", ".join(w for w, on in (("results", s.results is not None), ("summary", s.summary),
                                          ("config", s.config), ("versions", s.versions)) if on)  # fmt: skip
        h.append(f'<details class="full"><summary>all data: {what}</summary>{"".join(details)}</details>')
    h.append("</section>")
    return "\n".join(h), "\n".join(md)


def write_report(out_dir: str | os.PathLike, *, title: str | None = None, max_rows: int = 100) -> Path:
    """Write ``out_dir/report.html`` (self-contained) and ``out_dir/results.md``; return the HTML path.

    Raises :class:`InputError` when ``out_dir`` is missing or holds no results (no ``config.json``,
    ``summary.json``, ``results.csv`` or PNG outside ``runs/``). ``max_rows`` caps each results table.
    """
    root = Path(out_dir).expanduser()
    if not root.is_dir():
        raise InputError(f"report: no such folder {str(root)!r}")
    if max_rows < 1:
        raise InputError(f"report: --max-rows must be >= 1, got {max_rows}")
    sections = paper_order(scan(root))
    if not any(s.figures or s.results is not None or s.summary or s.config for s in sections):
        raise InputError(
            f"report: {str(root)!r} holds no results (no config.json, summary.json, results.csv or "
            f"PNG); run `varsmooth run ... --out {root}` first"
        )
    title = title or f"varsmooth report: {root.resolve().name}"
    parts = [_section_html(s, root, max_rows) for s in sections]
    toc = "".join(
        f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a>'
        f"{' <span class=meta>(' + html.escape(s.rel) + ')</span>' if s.rel and s.rel != s.title else ''}"
        "</li>"
        for s in sections
    )
    claims = claim_rows((s.title, s.summary) for s in sections)
    claims_html, claims_md = claims_section_html(claims), ""
    headlines = [(s, _headline(s)) for s in sections if _headline(s)]
    top = "".join(f'<p class="headline" id="headline-{s.anchor}"><a href="#{s.anchor}">{html.escape(s.title)}</a>: '
                  f"{html.escape(text)}</p>" for s, text in headlines)  # fmt: skip
    top_md = "".join(f"**{s.title}**: {text}\n\n" for s, text in headlines)
    if claims:
        claims_md = "## Paper claims\n\n" + markdown_table(claims, CLAIM_COLUMNS) + "\n"
    when = datetime.datetime.now().isoformat(timespec="seconds")
    n_fig = sum(len(s.figures) for s in sections)
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body><main>"
        f"<h1>{html.escape(title)}</h1><div class=meta>results folder <code>{html.escape(root.resolve().name)}</code>"
        f" (every path below is relative to it) · generated {when}"
        f" · {len(sections)} sections, {n_fig} figures</div>"
        f"{top}{claims_html}<nav><h3>Contents</h3><ol>{toc}</ol></nav>\n"
        + "\n".join(p[0] for p in parts)
        + f"</main><script>{SCRIPT}</script></body></html>\n"
    )
    atomic_write(root / "results.md", f"# {title}\n\n" + top_md + claims_md + "\n".join(p[1] for p in parts))
    out = root / "report.html"
    atomic_write(out, page)
    return out
