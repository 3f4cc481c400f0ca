"""Method comparisons (paper Sec. 4.3, App. B, C): run a grid of engine runs, select, tabulate and plot.

``noisy-accuracy``, ``fixed-hessian``, ``class-dependent``, ``hessian-init`` and ``natural-noise`` are grids of
engine runs (:func:`varsmooth.engine.train`, through the resumable :func:`.sweep.run_sweep`): :mod:`.grids` builds
them from the preset, :func:`run_grid` runs the unfinished ones and adds IVON's induced label noise to each run's
metrics, :mod:`.selection` applies the two selection protocols, and this module writes the tables
(``selection.csv``, ``table.md``) and the rows of the plots.

Induced label noise (the paper's Sec. 3.4, Eq. 9 for networks): ``eps_i = softmax(f_i(m)) - mean_s
softmax(f_i(theta_s))`` over the training examples, from the engine's final training-set predictions at the mean
and as posterior predictive (``test_samples`` draws). Per run, under the engine's prefix for the induced label noise
on training examples (``train_noise_*``, :func:`varsmooth.engine.noise_summary`), over every training example at the
end: ``train_noise_l1`` (mean of ``||eps_i||_1``), ``train_noise_on_label`` (mean of ``eps_{i, y_i}`` at the given
label; LS's is ``-alpha (1 - 1/K)``) and the ``l1`` mean over mislabeled and over clean examples. IVON's sigma
statistics come from the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..engine import noise_summary
from ..io import write_csv
from ..report.tables import markdown_table
from .claims import comparison_claims
from .common import numeric_metrics, tidy_rows, train_sweep_run, write_results
from .grids import check_configs, ess_grid, grid, require_data, run_config
from .reliability import reliability_figure
from .selection import compare_table, ivon_noise_summary, protocols_for, records

RUN_FN = "varsmooth.experiments.comparison:compare_run"
METRICS = (
    "test_acc", "test_pred_acc", "val_acc", "val_pred_acc", "test_nll", "test_pred_nll", "test_ece", "test_pred_ece",
    "train_acc", "corruption_realised_rate", "corruption_realised_rate_train", "ess", "sigma_mean", "sigma_median",
    "train_noise_l1", "train_noise_on_label", "train_noise_l1_noisy", "train_noise_l1_clean",
    "test_acc_best", "test_acc_best_epoch", "test_pred_acc_best", "beta2", "hess_init_weight", "h_ratio_q05",
    "h_ratio_median", "h_ratio_q95", "sigma_q05", "sigma_q95", "ess_search_cost_runs", "ess_factor_chosen",
    "val_clean_acc",
)  # fmt: skip


def train_noise_stats(result) -> dict[str, float]:
    """IVON's expected label noise over the training examples (module docstring); {} for point estimates."""
    if result.train_probs_pred is None or result.train_probs is None:
        return {}
    run = result.run
    pos = run.train_pos
    mask = None if run.flip_mask is None else run.flip_mask[pos]
    p_mean, p_pred = result.train_probs[pos], result.train_probs_pred[pos]
    summary = noise_summary(p_mean, p_pred, labels=run.labels[pos], flip_mask=mask)
    return {f"train_noise_{k}": v for k, v in summary.items() if k != "l2"}  # l2: the engine's, over the same set


def current_names(metrics: dict[str, float] | None) -> dict[str, float] | None:
    """A run's metrics with the names of this version: ``label_noise_*`` (runs finished by varsmooth 0.1.0) is read as
    ``train_noise_*``, so an old sweep folder resumes and tabulates as a new one."""
    if metrics is None:
        return None
    return {("train_noise_" + k.removeprefix("label_noise_") if k.startswith("label_noise_") else k): v
            for k, v in metrics.items()}  # fmt: skip


def compare_run(cfg: dict[str, Any], run_dir: Path, *, callbacks: Sequence = ()) -> dict[str, float]:
    """Sweep run function: one engine run (resumed from its checkpoint if any) -> its numeric final metrics plus
    :func:`train_noise_stats`."""
    result = train_sweep_run(cfg, run_dir, callbacks=callbacks)
    metrics = numeric_metrics(result.metrics)
    metrics.update(train_noise_stats(result))
    return metrics


def run_grid(configs: Sequence[dict], out: Path, runtime) -> tuple[list[dict], list[tuple[dict, dict | None]]]:
    """Run the unfinished configs (runtime: jobs, shard, progress) and rewrite ``results.csv`` from every
    finished run on disk; returns (tidy rows, [(config, metrics or None)])."""
    from .sweep import failed_runs, run_sweep

    check_configs(configs)
    results = run_sweep(configs, out, RUN_FN, jobs=runtime.jobs, shard=runtime.shard, progress=runtime.progress,
                        retry_failed=runtime.retry_failed, executor=runtime.executor,
                        gpus_per_run=runtime.gpus_per_run, cpus_per_run=runtime.cpus_per_run)  # fmt: skip
    results = [(c, current_names(m)) for c, m in results]
    rows = tidy_rows(results, list(METRICS), failed_runs([c for c, m in results if m is None], out))
    if rows:
        write_results(out, rows)
    rows = [r for r in rows if r["metric"] != "failed"]  # results.csv lists the failures; the analysis does not
    return rows, results


def write_table(out: Path, rows: Sequence[dict], setting: str) -> list[dict]:
    """Write ``selection.csv`` (one row per selected run: setting, protocol, method, chosen, seed, value) and
    ``table.md``; return the JSON-friendly summary rows."""
    tidy = [
        {setting: r[setting], "protocol": r["protocol"], "method": r["method"], "chosen": r["chosen"],
         "seed": seed, "metric": "test_acc", "value": v}
        for r in rows for seed, v in r["values"].items()
    ]  # fmt: skip
    if tidy:
        write_csv(out / "selection.csv", tidy)
    table = [
        {setting: r[setting], "protocol": r["protocol"], "method": r["method"], "chosen": r["chosen"],
         "test accuracy": r["text"], "n": r["n"]}
        for r in rows
    ]  # fmt: skip
    if table:
        (out / "table.md").write_text(markdown_table(table, list(table[0])), encoding="utf-8")
    return [{k: v for k, v in r.items() if k not in ("values", "hp", "run_method")} for r in rows]


def plot_rows(rows: Sequence[dict], *, fixed: dict[Any, dict] | None = None, setting: str = "corruption") -> list[dict]:
    """Tidy rows for the accuracy-vs-hyperparameter plot: ``test_acc`` rows, plus IVON's posterior predictive as a
    pseudo-method ``ivon (pred.)`` (``test_pred_acc`` relabelled), only at ``fixed[row[setting]]`` when given."""
    out = [r for r in rows if r["metric"] == "test_acc"]
    for r in rows:
        if r["metric"] == "test_pred_acc" and str(r["method"]).startswith("ivon"):
            keep = fixed is None or all(str(r.get(k)) == str(v) for k, v in fixed.get(r[setting], {}).items())
            if keep:
                out.append({**r, "method": f"{r['method']} (pred.)", "metric": "test_acc"})
    return out


def progress_note(results: Sequence[tuple[dict, dict | None]], out: Path) -> dict[str, Any]:
    """How many runs finished, failed (recorded, :func:`.sweep.failed_runs`) and exist, the ``failures`` and a
    ``selection_note`` saying that selection and the tables leave them out."""
    from .sweep import failed_runs

    failures = failed_runs([c for c, m in results if m is None], out)
    note = {"runs_finished": sum(m is not None for _, m in results), "runs_failed": len(failures),
            "runs_total": len(results)}  # fmt: skip
    if failures:
        note["failures"] = failures
        note["selection_note"] = (
            f"{len(failures)} failed run(s) are left out of hyperparameter selection and of every table: each "
            "setting is chosen among the runs that finished (see failures; --retry-failed runs them again)"
        )
    return note


# ---------------------------------------------------------------------------------------------------------------
# the ERM / LS / SAM / IVON comparison shared by noisy-accuracy, class-dependent and natural-noise


def comparison_configs(
    cfg: dict[str, Any], settings: Sequence[tuple[Any, str, dict]]
) -> tuple[list[dict], dict[Any, dict[str, float]]]:
    """ERM, LS over ``alphas``, SAM over ``rhos``, IVON over ``ess_factors`` x ``hess_inits`` for every
    ``(setting value, corruption, extra tags)`` and seed; returns the configs and IVON's fixed setting per value."""
    require_data(cfg)
    configs, fixed = [], {}
    for value, corruption, extra in settings:
        alphas = grid(cfg, "alphas", corruption, upper=1.0)
        rhos = grid(cfg, "rhos", corruption)
        ess_factors = ess_grid(cfg, corruption)
        h0s = grid(cfg, "hess_inits", corruption, positive=True)
        fixed[value] = {"ess_factor": ess_factors[0], "h0": h0s[0]}
        for seed in cfg["seeds"]:
            kw = {"extra_tags": extra}
            configs.append(run_config(cfg, "erm", corruption, seed, **kw))
            configs += [run_config(cfg, "ls", corruption, seed, alpha=a, **kw) for a in alphas]
            configs += [run_config(cfg, "sam", corruption, seed, rho=r, **kw) for r in rhos]
            configs += [
                run_config(cfg, "ivon", corruption, seed, ess_factor=e, h0=h, **kw) for e in ess_factors for h in h0s
            ]
    return configs, fixed


_FIGURES = {"kappa": "Fig. 7"}  # the paper figure of a comparison by its setting column, when not given


def run_comparison(
    cfg: dict[str, Any],
    out: Path,
    runtime,
    settings: Sequence[tuple[Any, str, dict]],
    *,
    setting: str,
    curves: bool = True,
    relabel: dict[str, Any] | None = None,
    figure: str | None = None,
) -> dict[str, Any]:
    """Run :func:`comparison_configs` and write table.md, selection.csv, accuracy_vs_hyperparameter.png (when
    ``curves``) and summary_<protocol>.png (bars per ``setting`` value); returns the summary. ``relabel``: tag
    values to set on every run (e.g. the corruption column of natural-noise runs, whose engine corruption is "none")."""
    from .. import plots

    configs, fixed = comparison_configs(cfg, settings)
    for c in configs:
        c["tags"].update(relabel or {})
    if relabel and setting in relabel:  # one setting, now named by the relabelled value
        fixed = {relabel[setting]: next(iter(fixed.values()))}
    rows, results = run_grid(configs, out, runtime)
    recs = records(results)
    protocols = protocols_for(cfg)
    table = compare_table(recs, setting=setting, ivon_fixed=fixed, protocols=protocols)
    summary_rows = write_table(out, table, setting)
    figures = []
    if rows and curves:
        figures.append(
            plots.accuracy_vs_hyperparameter(
                plot_rows(rows, fixed=fixed, setting=setting),
                x={"ls": "alpha", "sam": "rho"},
                baseline_methods=["ls", "sam"],
                band_methods=["erm", "ivon", "ivon (pred.)"],
                band_by=("ess_factor",),
                panel=setting,
                xlabels={"alpha": "LS smoothing rate alpha", "rho": "SAM neighbourhood rho"},
                path=out / "accuracy_vs_hyperparameter.png",
                title="test accuracy (mean ± std over seeds; bands: ERM, IVON)",
            ).name
        )
    for protocol in protocols:
        sel = [r for r in table if r["protocol"] == protocol]
        if sel:
            bar_rows = [
                {setting: r[setting], "method": r["method"], "seed": s, "metric": "test_acc", "value": v}
                for r in sel for s, v in r["values"].items()
            ]  # fmt: skip
            figures.append(
                plots.bar_plot_rows(
                    bar_rows,
                    group=setting,
                    path=out / f"summary_{protocol}.png",
                    title=f"{protocol} protocol (mean ± std over seeds)",
                ).name  # fmt: skip
            )
    reliability = reliability_figure(out, table, configs, setting=setting, seed=cfg["seeds"][0])
    if reliability is not None:
        figures.append(reliability.name)
    return {
        "protocols": protocols,
        "ivon_fixed": {str(k): v for k, v in fixed.items()},
        "table": summary_rows,
        # the paper's claims (figure: Fig. 5/8 noisy-accuracy, Fig. 7 class-dependent, Fig. 9 natural-noise)
        "claims": comparison_claims(table, setting=setting, figure=figure or _FIGURES.get(setting, "Fig. 5"),
                                    sam_figure=None if figure or setting in _FIGURES else "Fig. 8"),
        "ivon_label_noise": ivon_noise_summary(recs, keys=(setting, "ess_factor", "h0")),
        "figures": figures,
        **progress_note(results, out),
    }
