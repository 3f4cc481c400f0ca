"""IVON's accuracy against its Hessian initialisation h0 (paper Fig. 10; App. B.1).

Per corruption setting and seed, IVON at every ``hess_inits`` value (and every ``ess_factors``); h0 sets the initial
posterior width ``sigma = 1 / sqrt(ess (h0 + delta))`` and, with ``rescale_lr``, the step size. The paper finds the
accuracy varies by at most ~10% for h0 >= 0.05; the summary reports that spread (max - min of the mean accuracy
over h0 >= ``spread_from``) per setting.

Outputs: ``results.csv``, ``table.md``, ``accuracy_vs_h0.png`` (mean ± std over seeds, log x; at the mean and as
posterior predictive).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import plots
from ..report.tables import markdown_table
from .claims import hessian_init_claims
from .comparison import progress_note, run_grid
from .grids import corruptions, ess_grid, fmt_factor, grid, require_data, run_config
from .selection import records, stats

ID = "hessian-init"
DESCRIPTION = "Fig. 10: IVON test accuracy vs Hessian initialisation h0 under label noise"


def build(cfg: dict[str, Any]) -> list[dict]:
    require_data(cfg)
    configs = []
    for corruption in corruptions(cfg):
        ess_factors = ess_grid(cfg, corruption)
        h0s = grid(cfg, "hess_inits", corruption, positive=True)
        for seed in cfg["seeds"]:
            configs += [
                run_config(cfg, "ivon", corruption, seed, ess_factor=e, h0=h) for e in ess_factors for h in h0s
            ]
    return configs


def run(cfg: dict[str, Any], out: Path, runtime=None) -> dict[str, Any]:
    from . import Runtime

    configs = build(cfg)
    rows, results = run_grid(configs, out, runtime or Runtime())
    recs = records(results)
    spread_from = float(cfg.get("spread_from", 0.05))
    table, spread = [], []
    keys = dict.fromkeys((r["corruption"], r["ess_factor"]) for r in recs)
    for corruption, e in keys:
        here = [r for r in recs if r["corruption"] == corruption and r["ess_factor"] == e]
        for metric in ("test_acc", "test_pred_acc"):
            means = {}
            for h in sorted(dict.fromkeys(r["h0"] for r in here)):
                s = stats([r[metric] for r in here if r["h0"] == h and metric in r])
                means[h] = s["mean"]
                table.append({"corruption": corruption, "ess_factor": e, "h0": h, "metric": metric, **s})
            big = [m for h, m in means.items() if h >= spread_from]
            if big:
                spread.append({"corruption": corruption, "ess_factor": e, "metric": metric, "h0_from": spread_from,
                               "spread": float(np.max(big) - np.min(big)),
                               "best_h0": max(means, key=means.get)})  # fmt: skip
    figures = []
    if rows:
        md = [{k: r[k] for k in ("corruption", "ess_factor", "h0", "metric")}
              | {"test accuracy": r["text"], "n": r["n"]}
              for r in table]  # fmt: skip
        (out / "table.md").write_text(markdown_table(md, list(md[0])), encoding="utf-8")
        curves = [
            {**r, "metric": "test_acc",
             "method": f"{'pred.' if r['metric'] == 'test_pred_acc' else 'mean'}, ess {fmt_factor(r['ess_factor'])}"}
            for r in rows if r["metric"] in ("test_acc", "test_pred_acc")
        ]  # fmt: skip
        figures.append(
            plots.accuracy_vs_hyperparameter(
                curves,
                x="h0",
                baseline_methods=list(dict.fromkeys(r["method"] for r in curves)),
                logx=True,
                xlabels={"h0": "Hessian initialisation h0"},
                path=out / "accuracy_vs_h0.png",
                title="IVON test accuracy vs h0",
            ).name  # fmt: skip
        )
    return {"table": table, "spread": spread, "claims": hessian_init_claims(recs, h0_from=spread_from),
            "figures": figures, **progress_note(results, out)}
