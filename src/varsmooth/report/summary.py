"""The terminal summary of a run: a compact aligned table of what was found, the verdicts, and the report's path.

:func:`summarize` reads files only (it imports no experiment) and returns plain text for stdout:

- an experiment folder (``summary.json``, ``results.csv``): one row per selected method -- for the comparison
  experiments and the demo the ``table`` rows of ``summary.json`` (setting, protocol, method, chosen
  hyperparameter), with test NLL and ECE averaged over seeds from ``results.csv`` at the chosen setting (else the
  rows' own ``nll`` / ``ece``); for a demo folder without a ``table`` its selected ERM / LS / IVON runs
  (``runs/<name>/final.json``); then the detector's AUROC / AP where there is one, the experiment's one-sentence
  ``headline`` where it states one, then one line per claim in ``summary.json["claims"]``; a sweep with failed
  runs says how many and lists them (``runs_failed``, ``failures``);
- a train run folder (``final.json``, ``config.json``): one row (two for IVON: at the mean and predictive).

Accuracies are shown in percent (mean ± std over seeds where there are several); NLL in nats; ECE as a fraction.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io import read_csv, read_json
from .tables import seeds_needed

__all__ = ["format_table", "summarize", "summary_rows"]

COLUMNS = ("setting", "protocol", "method", "chosen", "accuracy %", "NLL", "ECE", "n")
# (row label, method tag, (acc, nll, ece) metrics) of the engine's final metrics
_POINT = ("test_acc", "test_nll", "test_ece")
_PRED = ("test_pred_acc", "test_pred_nll", "test_pred_ece")


def _read_json(path: Path) -> dict:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _num(v: Any) -> float | None:
    try:
        out = float(v)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _pct(values: Sequence[float]) -> str:
    """Mean (± sample std for several) of accuracies in [0, 1], as percent with one decimal."""
    arr = 100 * np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return "-"
    return f"{arr.mean():.1f}" + (f" ± {arr.std(ddof=1):.1f}" if arr.size > 1 else "")


def _mean(values: Sequence[float], fmt: str) -> str:
    return format(float(np.mean(values)), fmt) if len(values) else "-"


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows (dicts of strings) as aligned plain text: a header, a rule, one line per row. Columns empty in every
    row are left out; numbers are right-aligned. Returns the text without a trailing newline ("" for no rows)."""
    if not rows:
        return ""
    columns = [c for c in (columns or list(dict.fromkeys(k for r in rows for k in r)))
               if any(str(r.get(c, "")) not in ("", "-") for r in rows)]  # fmt: skip
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    numeric = [all(_num(row[i].split(" ")[0]) is not None or row[i] in ("", "-") for row in cells) for i in
               range(len(columns))]  # fmt: skip

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))

    out = [line(columns), "  ".join("-" * w for w in widths)] + [line(row) for row in cells]
    return "\n".join(s.rstrip() for s in out)


# ---------------------------------------------------------------------------------------------------------------
# rows from the files


def _chosen_matches(row: Mapping[str, Any], chosen: str) -> bool:
    """Does a results.csv row have the hyperparameters ``chosen`` ("alpha=0.1, h0=0.5", "-" for none)? A part
    without "=" names a setting (the demo's "ess auto -> N/16") and constrains nothing."""
    if chosen in ("", "-"):
        return True
    for part in chosen.split(", "):
        key, eq, value = part.partition("=")
        if not eq:
            continue
        cell = str(row.get(key, ""))
        a, b = _num(cell), _num(value)
        if not (cell == value or (a is not None and b is not None and abs(a - b) < 1e-12)):
            return False
    return True


def _method_tag(label: str) -> str:
    """The results.csv method of a summary table label ("best LS" -> "ls", "IVON (pred.)" -> "ivon")."""
    low = label.lower()
    for tag in ("ivon-fixed-h", "ivon", "sam", "ols", "ls", "erm"):
        if tag in low.split() or low.startswith(tag) or f" {tag}" in low:
            return tag
    return low


def _stat(row: Mapping[str, Any], key: str) -> str:
    """A table row's own ``{key: {"mean": ...}}`` (compare_table's nll / ece) to three decimals, "-" for none."""
    value = _num((row.get(key) or {}).get("mean")) if isinstance(row.get(key), Mapping) else None
    return "-" if value is None else f"{value:.3f}"


def _comparison_rows(summary: dict, results: list[dict]) -> list[dict[str, str]]:
    """One row per ``summary["table"]`` entry of a comparison experiment; NLL/ECE from results.csv."""
    table = summary.get("table") or []
    setting = next((k for k in table[0] if k not in ("protocol", "method", "chosen", "mean", "std", "n", "text",
                                                      "selected_by")), "")  # fmt: skip
    out = []
    for t in table:
        pred = "pred" in str(t["method"]).lower()
        acc, nll, ece = _PRED if pred else _POINT
        tag = _method_tag(str(t["method"]))
        match = [r for r in results if str(r.get(setting)) == str(t.get(setting)) and r.get("method") == tag
                 and _chosen_matches(r, str(t.get("chosen", "")))]  # fmt: skip

        def vals(metric: str, match=match) -> list[float]:
            return [v for r in match if r.get("metric") == metric and (v := _num(r.get("value"))) is not None]

        out.append({
            "setting": str(t.get(setting, "")), "protocol": str(t.get("protocol", "")), "method": str(t["method"]),
            "chosen": str(t.get("chosen", "")),
            "accuracy %": f"{100 * t['mean']:.1f}" + (f" ± {100 * t['std']:.1f}" if t.get("n", 1) > 1 else ""),
            "NLL": _mean(vals(nll), ".3f") if vals(nll) else _stat(t, "nll"),
            "ECE": _mean(vals(ece), ".3f") if vals(ece) else _stat(t, "ece"), "n": str(t.get("n", "")),
        })  # fmt: skip
        if not match and vals(acc):
            out[-1]["accuracy %"] = _pct(vals(acc))
    return out


def _variant_rows(summary: dict) -> list[dict[str, str]]:
    """fixed-hessian / hessian-init: their ``table`` rows (one per variant and metric) as they are."""
    out = []
    for t in summary.get("table") or []:
        name = t.get("variant") or f"ivon h0={t.get('h0')}, ess {t.get('ess_factor')}"
        out.append({"setting": str(t.get("noise", t.get("corruption", ""))),
                    "method": f"{name} ({'pred.' if 'pred' in str(t.get('metric')) else 'mean'})",
                    "accuracy %": f"{100 * t['mean']:.1f}" + (f" ± {100 * t['std']:.1f}" if t.get("n", 1) > 1 else ""),
                    "n": str(t.get("n", ""))})  # fmt: skip
    return out


def _final_rows(final: Mapping[str, Any], method: str, chosen: str = "") -> list[dict[str, str]]:
    """Rows of one engine run's final metrics: at the mean, and predictive when it has one."""
    rows = []
    for suffix, (acc, nll, ece) in (("", _POINT), (" (pred.)", _PRED)):
        if _num(final.get(acc)) is None:
            continue
        rows.append({"method": method + (suffix if _num(final.get("test_pred_acc")) is not None else ""),
                     "chosen": chosen, "accuracy %": f"{100 * float(final[acc]):.1f}",
                     "NLL": _mean([final[nll]] if _num(final.get(nll)) is not None else [], ".3f"),
                     "ECE": _mean([final[ece]] if _num(final.get(ece)) is not None else [], ".3f")})  # fmt: skip
    return rows


def _demo_rows(folder: Path, summary: dict) -> list[dict[str, str]]:
    """The demo: its selected ERM / LS / IVON runs (``accuracy/summary.json`` names them)."""
    acc = _read_json(folder / "accuracy" / "summary.json")
    rows = []
    for method, label in (("erm", "ERM"), ("ls", "LS"), ("ivon", "IVON")):
        sel = acc.get(f"{method}_selected") or {}
        final = _read_json(folder / "runs" / str(sel.get("name", "")) / "final.json") if sel.get("name") else {}
        hp = {"ls": "alpha", "ivon": "ess_factor"}.get(method)
        chosen = f"{hp}={sel['value']:g}" if hp and _num(sel.get("value")) is not None else "-"
        if final:
            rows += _final_rows(final, label, chosen)
        elif method in (summary.get("test_acc") or {}):
            rows.append({"method": label, "chosen": chosen, "accuracy %": _pct([summary["test_acc"][method]])})
    return rows


def _train_run_rows(folder: Path) -> list[dict[str, str]]:
    final = _read_json(folder / "final.json")
    config = _read_json(folder / "config.json").get("config") or {}
    method = str(final.get("method") or config.get("method") or "run")
    hp = {"ls": "alpha", "ols": "ols_init_smoothing", "sam": "rho", "ivon": "ess", "ivon-fixed-h": "ess"}.get(method)
    chosen = f"{hp}={float(config[hp]):g}" if hp and _num(config.get(hp)) is not None else "-"
    return _final_rows(final, method, chosen)


def _detector_lines(folder: Path, summary: dict) -> list[str]:
    """AUROC / AP of the suspects against the known flips, where an experiment has a detector."""
    det = dict(summary.get("detection") or {})
    for sub in ("noise-gallery",):
        det = {**(_read_json(folder / sub / "summary.json").get("detection") or {}), **det}
    det.update({k: v for k, v in summary.items() if k.startswith(("auroc_", "ap_"))})
    out = []
    for score in ("predictive", "magnitude", "label_noise"):
        auroc, ap = _num(det.get(f"auroc_{score}")), _num(det.get(f"ap_{score}"))
        if auroc is not None:
            line = f"suspects ({score} score) vs the flipped labels: AUROC {auroc:.3f}"
            line += f", AP {ap:.3f}" if ap is not None else ""
            base = _num(det.get("flipped_rate"))
            out.append(line + (f" (base rate {base:.3f})" if base is not None else ""))
    return out


def _side(numbers: Mapping[str, Any], side: str) -> str:
    """The method of one side of a claim (``numbers["rows"][side]["method"]``, e.g. "IVON"), "" when unrecorded."""
    rows = numbers.get("rows") if isinstance(numbers.get("rows"), Mapping) else {}
    row = rows.get(side) if isinstance(rows.get(side), Mapping) else {}
    return f"{str(row['method']).upper()} " if row.get("method") else ""


def _claim_line(c: Mapping[str, Any]) -> str:
    n = c.get("numbers") or {}
    verdict = str(c.get("verdict", "")).upper()
    where = f" [{c['setting']}]" if c.get("setting") else ""
    nums = ""
    hint = seeds_needed(n)
    if hint and _num(n.get("diff_mean")) is not None:  # too few seeds: what was seen, and how to get a verdict
        k = len(n.get("seeds", []))
        nums = (f": {k} seed{'s' if k != 1 else ''}: {_side(n, 'a')}{100 * n['a_mean']:.1f} vs "
                f"{_side(n, 'b')}{100 * n['b_mean']:.1f} ({100 * n['diff_mean']:+.1f}); {hint}")  # fmt: skip
    elif hint:
        nums = f": {hint}"
    elif _num(n.get("diff_mean")) is not None:
        nums = f": {100 * n['a_mean']:.1f} vs {100 * n['b_mean']:.1f}, diff {100 * n['diff_mean']:+.1f}"
        nums += f" ± {100 * n['diff_std']:.1f}" if _num(n.get("diff_std")) is not None else ""
        nums += f" points over {len(n.get('seeds', []))} seeds"
    elif _num(n.get("range")) is not None:
        nums = f": range {100 * n['range']:.1f} points (limit {100 * n['limit']:.0f})"
    return f"{verdict:<17} {c.get('claim', '')} ({c.get('figure', '')}){where}{nums}"


def summary_rows(folder: str | os.PathLike) -> list[dict[str, str]]:
    """The table rows of :func:`summarize` (dicts over :data:`COLUMNS`, strings), for tests and other callers."""
    folder = Path(folder)
    summary = _read_json(folder / "summary.json")
    if not summary and (folder / "final.json").exists():
        return _train_run_rows(folder)
    table = summary.get("table")
    if isinstance(table, list) and table and isinstance(table[0], dict):
        if "protocol" in table[0]:
            results = read_csv(folder / "results.csv") if (folder / "results.csv").exists() else []
            return _comparison_rows(summary, results)
        if "mean" in table[0]:
            return _variant_rows(summary)
    if (folder / "accuracy" / "summary.json").exists() or isinstance(summary.get("test_acc"), dict):
        return _demo_rows(folder, summary)
    return []


def _failure_lines(folder: Path, summary: dict) -> list[str]:
    """A sweep's failed runs (``summary.json``: ``runs_failed``, ``failures``): a count, then one line per run."""
    failures = [f for f in summary.get("failures") or [] if isinstance(f, Mapping)]
    if not summary.get("runs_failed") and not failures:
        return []
    total = summary.get("runs_total", "?")
    out = [f"FAILED: {summary.get('runs_failed', len(failures))} of {total} runs (left out of selection and tables; "
           f"{folder / 'summary.json'}; --retry-failed runs them again):"]  # fmt: skip
    for f in failures:
        out.append(f"  {f.get('name', '?')}: {f.get('reason', '')} (last good epoch {f.get('last_good_epoch', '?')})")
    return out


def summarize(folder: str | os.PathLike, *, report: str | os.PathLike | None = None) -> str:
    """The terminal summary of an experiment or train run folder: the table, detector and claim lines, and the
    report's path (``report``, default ``folder/report.html`` when it exists). Reads files only."""
    folder = Path(folder)
    summary = _read_json(folder / "summary.json")
    parts = []
    title = summary.get("experiment") or ("train run" if (folder / "final.json").exists() else folder.name)
    extra = [f"preset {summary['preset']}"] if summary.get("preset") else []
    if _num(summary.get("wall_time_s")) is not None:
        extra.append(f"{float(summary['wall_time_s']):.1f}s")
    parts.append(f"{title}" + (f" ({', '.join(extra)})" if extra else ""))
    table = format_table(summary_rows(folder), COLUMNS)
    if table:
        parts.append(table)
    parts += _detector_lines(folder, summary)
    parts += _failure_lines(folder, summary)
    if isinstance(summary.get("headline"), str) and summary["headline"].strip():
        parts.append(summary["headline"].strip())
    claims = [c for c in summary.get("claims") or [] if isinstance(c, Mapping)]
    if claims:
        parts.append("claims (paper figure; paired over seeds):")
        parts += ["  " + _claim_line(c) for c in claims]
    report_path = Path(report) if report is not None else folder / "report.html"
    if report_path.exists():
        parts.append(f"report: {report_path}")
    elif summary:
        parts.append(f"files: {folder} (report: varsmooth report {folder})")
    else:
        parts.append(f"files: {folder}")
    return "\n".join(parts)
