"""Learned vs fixed Hessian in IVON (paper Fig. 6; Sec. 4.3.1, App. C.2).

``ivon-fixed-h`` sets ``beta2 = 1`` in Alg. 1 line 5, so ``h`` stays at its initial value and the posterior
variance ``sigma^2 = 1 / (ess (h0 + delta))`` never adapts; ``ivon`` learns ``h``. Per corruption setting and seed:
``ivon`` at every ``ess_factors`` x ``hess_inits`` and ``ivon-fixed-h`` at every ``ess_factors`` x
``fixed_hess_inits`` ("multiple fixed Hessians", as in the paper). Reported at the mean and as posterior predictive.

Outputs: ``results.csv``, ``table.md`` (mean ± std over seeds per variant), ``fixed_hessian.png`` (bars per corruption
setting), and in the summary the gap learned minus best fixed (by test accuracy, and by validation accuracy when
``val_fraction > 0``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import plots
from ..report.tables import markdown_table
from .claims import fixed_hessian_claims
from .comparison import progress_note, run_grid
from .grids import corruptions, ess_grid, fmt_factor, grid, require_data, run_config
from .selection import records, select, stats

ID = "fixed-hessian"
DESCRIPTION = "Fig. 6: IVON with learned vs fixed Hessian (beta2 = 1) under synthetic label noise"


def build(cfg: dict[str, Any]) -> list[dict]:
    require_data(cfg)
    configs = []
    for corruption in corruptions(cfg):
        ess_factors = ess_grid(cfg, corruption)
        learned = grid(cfg, "hess_inits", corruption, positive=True)
        fixed = grid(cfg, "fixed_hess_inits", corruption, positive=True)
        for seed in cfg["seeds"]:
            for e in ess_factors:
                configs += [run_config(cfg, "ivon", corruption, seed, ess_factor=e, h0=h) for h in learned]
                configs += [run_config(cfg, "ivon-fixed-h", corruption, seed, ess_factor=e, h0=h) for h in fixed]
    return configs


def _variant(r: dict) -> str:
    return f"{'learned' if r['method'] == 'ivon' else 'fixed'} h (h0={r['h0']:g}, ess {fmt_factor(r['ess_factor'])})"


def run(cfg: dict[str, Any], out: Path, runtime=None) -> dict[str, Any]:
    from . import Runtime

    configs = build(cfg)
    rows, results = run_grid(configs, out, runtime or Runtime())
    recs = records(results)
    table, gaps = [], []
    for corruption in dict.fromkeys(r["corruption"] for r in recs):
        here = [r for r in recs if r["corruption"] == corruption]
        for variant in dict.fromkeys(_variant(r) for r in here):
            vr = [r for r in here if _variant(r) == variant]
            for metric in ("test_acc", "test_pred_acc"):
                s = stats([r[metric] for r in vr if metric in r])
                table.append({"corruption": corruption, "variant": variant, "method": vr[0]["method"],
                              "h0": vr[0]["h0"],
                              "ess_factor": vr[0]["ess_factor"], "metric": metric, **s})  # fmt: skip
        for e in dict.fromkeys(r["ess_factor"] for r in here):
            for report, by in (("test_acc", "test_acc"), ("test_acc", "val_acc"), ("test_pred_acc", "val_pred_acc")):
                sub = [r for r in here if r["ess_factor"] == e]
                learned = select([r for r in sub if r["method"] == "ivon"], hp=("h0",), report=report, by=by)
                fixed = select([r for r in sub if r["method"] == "ivon-fixed-h"], hp=("h0",), report=report, by=by)
                if learned and fixed:
                    gaps.append(
                        {
                            "corruption": corruption,
                            "ess_factor": e,
                            "metric": report,
                            "selected_by": by,
                            "learned": learned["text"],
                            "best_fixed": fixed["text"],
                            "best_fixed_h0": fixed["chosen"]["h0"],
                            "gap": learned["mean"] - fixed["mean"],
                        }
                    )
    figures = []
    if table:
        md = [{k: r[k] for k in ("corruption", "variant", "metric")} | {"test accuracy": r["text"], "n": r["n"]}
              for r in table]  # fmt: skip
        (out / "table.md").write_text(markdown_table(md, list(md[0])), encoding="utf-8")
        bars = [{**r, "series": _variant(r), "metric": "test_acc", "value": r["test_acc"]} for r in recs]
        figures.append(
            plots.bar_plot_rows(
                bars,
                group="corruption",
                series="series",
                path=out / "fixed_hessian.png",
                title="IVON: learned vs fixed h (test accuracy at the mean)",
            ).name  # fmt: skip
        )
    return {"table": table, "learned_minus_best_fixed": gaps, "claims": fixed_hessian_claims(recs), "figures": figures,
            **progress_note(results, out)}
