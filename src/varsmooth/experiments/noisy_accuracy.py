"""Test accuracy under synthetic label noise: LS alpha and SAM rho grids, ERM and IVON (paper Fig. 5, 8; Sec. 4.3.1).

For each noise setting (``noises``: symmetric 20%, symmetric 40%, pair-flip 20%) and seed: ERM, LS over ``alphas``,
SAM over ``rhos`` and IVON over ``ess_factors`` x ``hess_inits`` (ess = factor x training-set size; the paper uses
ess = N, h0 = 0.9). Reports the *paper* and *fair* protocols side by side (see :mod:`._compare`), IVON at the
mean and as posterior predictive, and the label noise IVON induced at each ess.

Outputs: ``results.csv`` (one row per run and metric), ``selection.csv`` and ``table.md`` (ERM, best LS, best SAM,
IVON per setting and protocol, mean ± std over seeds), ``accuracy_vs_hyperparameter.png`` (test accuracy vs alpha
and rho with IVON as horizontal bands over seeds, one band per ess), ``summary_<protocol>.png`` (bars).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import plots
from ..data.corruption import parse_noise
from ..errors import InputError
from . import _compare as C

ID = "noisy-accuracy"
DESCRIPTION = "Fig. 5, 8: accuracy vs LS alpha / SAM rho with IVON and ERM under symmetric and pair-flip noise"


def noises(cfg: dict) -> list[str]:
    values = cfg.get("noises")
    if not isinstance(values, list) or not values:
        raise InputError(f"noises={values!r} is not allowed; give a list such as [symmetric:0.2, pairflip:0.2]")
    for v in values:
        parse_noise(str(v))
    return [str(v) for v in values]


def build(cfg: dict[str, Any]) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """The sweep configurations and, per noise setting, IVON's fixed (paper-protocol) setting."""
    C.require_data(cfg)
    configs, fixed = [], {}
    for noise in noises(cfg):
        alphas = C.grid(cfg, "alphas", noise, upper=1.0)
        rhos = C.grid(cfg, "rhos", noise)
        ess_factors = C.grid(cfg, "ess_factors", noise, positive=True)
        h0s = C.grid(cfg, "hess_inits", noise, positive=True)
        fixed[noise] = {"ess_factor": ess_factors[0], "h0": h0s[0]}
        for seed in cfg["seeds"]:
            configs.append(C.run_config(cfg, "erm", noise, seed))
            configs += [C.run_config(cfg, "ls", noise, seed, alpha=a) for a in alphas]
            configs += [C.run_config(cfg, "sam", noise, seed, rho=r) for r in rhos]
            configs += [
                C.run_config(cfg, "ivon", noise, seed, ess_factor=e, h0=h) for e in ess_factors for h in h0s
            ]
    return configs, fixed


def run(cfg: dict[str, Any], out: Path, runtime=None) -> dict[str, Any]:
    from . import Runtime

    runtime = runtime or Runtime()
    configs, fixed = build(cfg)
    rows, results = C.run_grid(configs, out, runtime)
    recs = C.records(results)
    protocols = C.protocols_for(cfg)
    table = C.compare_table(recs, setting="noise", ivon_fixed=fixed, protocols=protocols)
    summary_rows = C.write_table(out, table, "noise")
    figures = []
    if rows:
        figures.append(
            plots.accuracy_vs_hyperparameter(
                C.plot_rows(rows, fixed=fixed),
                x={"ls": "alpha", "sam": "rho"},
                baseline_methods=["ls", "sam"],
                band_methods=["erm", "ivon", "ivon (pred.)"],
                band_by=("ess_factor",),
                xlabels={"alpha": "LS smoothing rate alpha", "rho": "SAM neighbourhood rho"},
                path=out / "accuracy_vs_hyperparameter.png",
                title="test accuracy (mean ± std over seeds; bands: ERM, IVON)",
            ).name
        )
    for protocol in protocols:
        sel = [r for r in table if r["protocol"] == protocol]
        if sel:
            bar_rows = [
                {"noise": r["noise"], "method": r["method"], "seed": s, "metric": "test_acc", "value": v}
                for r in sel for s, v in r["values"].items()
            ]  # fmt: skip
            figures.append(
                plots.bar_plot_rows(
                    bar_rows, group="noise", path=out / f"summary_{protocol}.png",
                    title=f"{protocol} protocol (mean ± std over seeds)",
                ).name  # fmt: skip
            )
    return {
        "protocols": protocols,
        "ivon_fixed": fixed,
        "table": summary_rows,
        "ivon_label_noise": C.ivon_noise_summary(recs, keys=("noise", "ess_factor", "h0")),
        "figures": figures,
        **C.progress_note(results),
    }
