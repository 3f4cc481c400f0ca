"""One self-contained HTML report (and a Markdown table export) for a folder of experiment results.

:func:`write_report` scans ``OUT`` for experiment folders (``OUT`` itself and any sub-folder holding
``config.json``, ``summary.json`` or ``results.csv``; sweep folders named ``runs`` are skipped) and writes
``OUT/report.html``: a table of contents, then per experiment its description, config, summary values, results
table (tidy results aggregated over ``seed``: mean ± sample std, n) and package versions, with every PNG embedded as
a base64 data URI, so the file can be mailed or archived alone. ``OUT/results.md`` holds the same results tables in
Markdown, for pasting into the README. Both are written atomically.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .io import atomic_write, read_csv, read_json
from .report_tables import (
    CLAIM_COLUMNS,
    PROTOCOLS,
    claim_rows,
    claims_section_html,
    claims_table_html,
    pivot_html,
    pivot_markdown,
    pivot_tables,
)

MARKERS = ("config.json", "summary.json", "results.csv")
SKIP_DIRS = {"runs"}


# ---------------------------------------------------------------------------------------------------------------
# tables


def _number(value: Any) -> float | None:
    """``value`` as a float, or None when it is empty or not a number (CSV values arrive as strings)."""
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def aggregate(
    rows: Sequence[Mapping[str, Any]],
    *,
    over: str = "seed",
    value: str = "value",
    keys: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value) of ``value`` over ``over``.

    Rows are grouped by ``keys`` (default: every column except ``over`` and ``value``, in first-seen order); groups
    keep their first-seen order. Rows whose value is empty or not a number are skipped. Returns one dict per group:
    the key columns plus ``mean``, ``std`` and ``n`` (number of values averaged).
    """
    if keys is None:
        keys = [c for c in dict.fromkeys(k for r in rows for k in r) if c not in (over, value)]
    groups: dict[tuple, list[float]] = {}
    firsts: dict[tuple, Mapping[str, Any]] = {}
    for r in rows:
        v = _number(r.get(value))
        if v is None:
            continue
        key = tuple(str(r.get(k, "")) for k in keys)
        groups.setdefault(key, []).append(v)
        firsts.setdefault(key, r)
    out = []
    for key, vals in groups.items():
        arr = np.asarray(vals, dtype=np.float64)
        std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
        out.append(
            {
                **{k: firsts[key].get(k, "") for k in keys},
                "mean": float(arr.mean()),
                "std": std,
                "n": int(arr.size),
            }
        )
    return out


def format_value(value: Any) -> str:
    """A table cell: floats (and float-looking strings) to 4 significant digits, everything else as text."""
    if value is None:
        return ""
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        num = _number(value)
        looks_float = any(c in value.lower() for c in ".e") and num is not None and not value.isalpha()
        return f"{num:.4g}" if looks_float else value
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=str)
        return text if len(text) <= 160 else text[:157] + "..."
    if isinstance(value, np.generic):
        return format_value(value.item())
    return str(value)


def mean_std(mean: float, std: float, n: int) -> str:
    """``"0.9123 ± 0.0041"``: both to the decimals of the std's second significant digit; the mean alone for n = 1."""
    if n <= 1:
        return f"{mean:.4g}"
    if not (math.isfinite(std) and math.isfinite(mean)) or std == 0:
        return f"{mean:.4g} ± {std:.2g}"
    decimals = min(max(1 - math.floor(math.log10(float(f"{std:.2g}"))), 0), 10)  # 2 significant digits of std
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _is_numeric_column(rows: Sequence[Mapping[str, Any]], col: str) -> bool:
    cells = [r.get(col) for r in rows if r.get(col) not in (None, "")]
    return bool(cells) and all(_number(c) is not None or " ± " in str(c) for c in cells)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (dicts) restricted to ``columns``.

    Cells go through :func:`format_value`; ``|`` in a cell is escaped; numeric columns are right-aligned
    (``---:``). Returns the table with a trailing newline.
    """

    def cell(v: Any) -> str:
        return format_value(v).replace("|", "\\|").replace("\n", " ")

    align = ["---:" if _is_numeric_column(rows, c) else "---" for c in columns]
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def results_table(
    rows: Sequence[Mapping[str, Any]], *, max_rows: int = 100, over: str = "seed", value: str = "value"
) -> tuple[list[dict], list[str], str | None]:
    """The results table the report shows: ``(rows, columns, note)``.

    With ``over`` and ``value`` columns the rows are aggregated (:func:`aggregate`) into ``mean ± std`` and ``n``
    columns; otherwise they are shown as they are. Tables longer than ``max_rows`` are cut, and ``note`` says so.
    """
    columns = list(dict.fromkeys(k for r in rows for k in r))
    if over in columns and value in columns:
        keys = [c for c in columns if c not in (over, value) and any(r.get(c) not in (None, "") for r in rows)]
        agg = aggregate(rows, over=over, value=value, keys=keys)
        table = [
            {**{k: a[k] for k in keys}, "mean ± std": mean_std(a["mean"], a["std"], a["n"]), "n": a["n"]} for a in agg
        ]
        columns, what = [*keys, "mean ± std", "n"], f"mean ± std over {over} (sample std)"
    else:
        table, what = [dict(r) for r in rows], None
    note = what
    if len(table) > max_rows:
        cut = f"showing the first {max_rows} of {len(table)} rows; the full data is in results.csv"
        note = f"{what}; {cut}" if what else cut
        table = table[:max_rows]
    return table, columns, note


# ---------------------------------------------------------------------------------------------------------------
# scanning the output folder


@dataclass
class Section:
    """One experiment folder (or the loose figures of the output folder)."""

    path: Path
    rel: str
    title: str = ""
    description: str = ""
    preset: str = ""
    order: int | None = None  # the experiment's place in the paper's order (config.json), for sorting
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    results: list[dict] | None = None
    figures: list[Path] = field(default_factory=list)
    runs: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "sec-" + "".join(c if c.isalnum() else "-" for c in (self.rel or "root"))


def _scan(out_dir: Path) -> list[Section]:
    """Experiment folders (with a marker file) and figure-only folders, each with the PNGs it owns."""
    experiments: dict[Path, Section] = {}
    figure_only: dict[Path, Section] = {}
    for dirpath, dirnames, filenames in os.walk(out_dir):  # top-down, so parents are seen first
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        here = Path(dirpath)
        rel = here.relative_to(out_dir).as_posix()
        rel = "" if rel == "." else rel
        if any(m in filenames for m in MARKERS):
            experiments[here] = Section(path=here, rel=rel)
            runs = here / "runs"
            experiments[here].runs = sum(1 for _ in runs.glob("*/result.json")) if runs.is_dir() else 0
        for name in sorted(f for f in filenames if f.lower().endswith(".png") and not f.startswith(".")):
            # a PNG belongs to the nearest experiment folder above it, else to a section for its own folder
            owner = next((experiments[p] for p in [here, *here.parents] if p in experiments), None)
            if owner is None:
                owner = figure_only.setdefault(here, Section(path=here, rel=rel, title=rel or "Figures"))
            owner.figures.append(here / name)
    for s in experiments.values():
        _load(s)
    return [*experiments.values(), *figure_only.values()]


def _load(s: Section) -> None:
    for name in ("config.json", "summary.json"):
        path = s.path / name
        if not path.exists():
            continue
        try:
            data = read_json(path)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            s.problems.append(f"could not read {name}: {err}")
            continue
        if name == "config.json":
            s.config = data.get("config", {}) if isinstance(data.get("config"), dict) else {}
            s.versions = data.get("versions", {}) if isinstance(data.get("versions"), dict) else {}
            s.title = s.title or str(data.get("experiment", ""))
            s.preset = str(data.get("preset", ""))
            s.description = str(data.get("description", ""))
            s.order = data.get("order") if isinstance(data.get("order"), int) else None
        else:
            s.summary = {k: v for k, v in data.items() if k not in ("experiment", "preset", "description")}
            s.title = s.title or str(data.get("experiment", ""))
            s.preset = s.preset or str(data.get("preset", ""))
            s.description = str(data.get("description", "")) or s.description
    if (s.path / "results.csv").exists():
        try:
            s.results = read_csv(s.path / "results.csv")
        except (OSError, ValueError) as err:
            s.problems.append(f"could not read results.csv: {err}")
    s.title = s.title or s.rel or s.path.name


def experiment_sections(out_dir: str | os.PathLike) -> list[Section]:
    """The experiment folders under ``out_dir`` (``out_dir`` included), each loaded, in the paper's order."""
    return _paper_order(_scan(Path(out_dir).expanduser()))


def _paper_order(sections: list[Section]) -> list[Section]:
    """The output folder first, then experiments in the paper's order (recorded in their config.json), then the
    rest by path."""
    last = 1 + max((s.order for s in sections if s.order is not None), default=0)
    return sorted(sections, key=lambda s: (s.rel != "", last if s.order is None else s.order, s.rel))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


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
    num = {c for c in columns if _is_numeric_column(rows, c)}
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
    return _html_table([{"key": k, "value": v} for k, v in _flatten(d).items()], ["key", "value"], "kv")


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
    md = [f"## {s.title}\n"]
    if _headline(s):
        h.append(f'<p class="headline">{html.escape(_headline(s))}</p>')
        md.append(f"**{_headline(s)}**\n")
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
        details.append("<h3>Summary</h3>" + _kv_table(s.summary))
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
    sections = _paper_order(_scan(root))
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
        f"<h1>{html.escape(title)}</h1><div class=meta>{html.escape(str(root.resolve()))} · generated {when}"
        f" · {len(sections)} sections, {n_fig} figures</div>"
        f"{top}{claims_html}<nav><h3>Contents</h3><ol>{toc}</ol></nav>\n"
        + "\n".join(p[0] for p in parts)
        + f"</main><script>{SCRIPT}</script></body></html>\n"
    )
    atomic_write(root / "results.md", f"# {title}\n\n" + top_md + claims_md + "\n".join(p[1] for p in parts))
    out = root / "report.html"
    atomic_write(out, page)
    return out
