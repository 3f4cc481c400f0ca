"""Shared machinery of the method-comparison experiments (paper Sec. 4.3, App. B, C; docs/design.md).

``noisy-accuracy``, ``fixed-hessian``, ``class-dependent``, ``hessian-init`` and ``natural-noise`` are grids of
engine runs (:func:`varsmooth.engine.train`, through the resumable :func:`.sweep.run_sweep`) and this
module builds them, runs them, adds IVON's induced label noise to each run's metrics and selects hyperparameters
under two protocols (docs/design.md, "Selection protocols"):

- *paper*: each baseline at its best grid value **on the test set** (the peak of the mean-over-seeds curve, as in
  App. C), IVON at fixed settings (the first ``ess_factors`` and ``hess_inits`` entries);
- *fair*: every method's hyperparameters (LS alpha, SAM rho, IVON ess/h0) chosen by the mean over seeds of the
  accuracy on a validation split carved from the *noisy* training pool (``val_fraction``); the clean test set is
  read once, at the chosen value. Needs ``val_fraction > 0``.

Both protocols read the same runs (all trained on the same ``1 - val_fraction`` of the pool); they differ only in
the selection rule. IVON is reported at the mean (``test_acc``) and as posterior predictive (``test_pred_acc``;
the fair protocol selects the latter by ``val_pred_acc``).

Induced label noise (the paper's Sec. 3.4, Eq. 9 for networks): ``eps_i = softmax(f_i(m)) - mean_s
softmax(f_i(theta_s))`` over the training examples, from the engine's final training-set predictions at the mean
and as posterior predictive (``test_samples`` draws). Per run: ``label_noise_l1`` (mean of ``||eps_i||_1``),
``label_noise_on_label`` (mean of ``eps_{i, y_i}`` at the given label; LS's is ``-alpha (1 - 1/K)``) and the
``l1`` mean over mislabeled and over clean examples. IVON's sigma statistics come from the engine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import METHODS, TrainConfig, noise_summary, resolve_config
from ..errors import InputError
from ..io import write_csv
from ..report import markdown_table, mean_std
from ._common import load_cached, numeric_metrics, tidy_rows, train_sweep_run, write_results
from ._reliability import reliability_figure

RUN_FN = "varsmooth.experiments._compare:compare_run"
# Every run has all these tag columns (empty where they do not apply), so results.csv has the same columns always.
TAGS = ("method", "corruption", "alpha", "rho", "ess_factor", "h0", "seed")
METRICS = (
    "test_acc", "test_pred_acc", "val_acc", "val_pred_acc", "test_nll", "test_pred_nll", "test_ece", "test_pred_ece",
    "train_acc", "corruption_realised_rate", "corruption_realised_rate_train", "ess", "sigma_mean", "sigma_median",
    "label_noise_l1", "label_noise_on_label", "label_noise_l1_noisy", "label_noise_l1_clean",
    "test_acc_best", "test_acc_best_epoch", "test_pred_acc_best", "beta2", "hess_init_weight", "h_ratio_q05",
    "h_ratio_median", "h_ratio_q95", "sigma_q05", "sigma_q95", "ess_search_cost_runs", "ess_factor_chosen",
    "val_clean_acc",
)  # fmt: skip
# Keys of a preset that become TrainConfig fields of every run.
_TRAIN_KEYS = ("dataset", "data_dir", "model", "model_options", "train_subset", "val_fraction", "epochs", "batch_size")


# ---------------------------------------------------------------------------------------------------------------
# building the grid


def require_data(cfg: dict[str, Any]) -> None:
    """Raise InputError when the preset's dataset needs files and no ``data_dir`` was given."""
    from ..data import BUNDLED, DATASETS

    name = str(cfg.get("dataset", "")).lower()
    if name not in DATASETS:
        raise InputError(f"unknown dataset {cfg.get('dataset')!r}; allowed: {', '.join(DATASETS)}")
    if name not in BUNDLED and not cfg.get("data_dir"):
        raise InputError(
            f"dataset {name!r} is read from files: pass --data-dir DIR (the folder with its files), "
            "or use --preset smoke (bundled data)"
        )
    seeds = cfg.get("seeds", [cfg["seed"]] if "seed" in cfg else None)  # a list, or one ``seed``
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise InputError(f"seeds={seeds!r} is not allowed; give a non-empty list of integers (e.g. --seeds 0 1 2)")


def _grid(cfg: dict, key: str, *, positive: bool = False, upper: float | None = None) -> list[float]:
    values = cfg.get(key)
    if not isinstance(values, list) or not values:
        raise InputError(f"{key}={values!r} is not allowed; give a non-empty list of numbers")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise InputError(f"{key}: {v!r} is not allowed; values must be numbers >= 0")
        if positive and v <= 0 or upper is not None and v > upper:
            raise InputError(
                f"{key}: {v!r} is not allowed; values must be in {'(0' if positive else '[0'}, "
                f"{upper if upper is not None else 'inf'}]"
            )
        out.append(float(v))
    return out


def _setting_values(cfg: dict, key: str, corruption: str | None) -> Any:
    """``cfg[key]``, or the list under ``corruption_options[corruption][key]`` when that setting overrides it."""
    per_corruption = (cfg.get("corruption_options") or {}).get(corruption, {}) if corruption is not None else {}
    return per_corruption.get(key, cfg.get(key))


def grid(cfg: dict, key: str, corruption: str | None = None, **bounds) -> list[float]:
    """The list of numbers ``cfg[key]``, checked (InputError naming the key otherwise); a list under
    ``corruption_options[corruption][key]`` replaces it for that setting (e.g. the paper's per-setting h0, Table 1)."""
    return _grid({key: _setting_values(cfg, key, corruption)}, key, **bounds)


AUTO = "auto"


def fmt_factor(value: Any) -> str:
    """An ess factor as text: ``"x0.25"``, or ``"auto"``."""
    return AUTO if value == AUTO else f"x{float(value):g}"


def ess_grid(cfg: dict, corruption: str | None = None) -> list[float | str]:
    """``ess_factors``: positive factors of N, and ``"auto"`` (ess chosen by the engine on the validation split,
    :mod:`varsmooth.engine.ess_search`; needs ``val_fraction > 0``)."""
    values = _setting_values(cfg, "ess_factors", corruption)
    if not isinstance(values, list) or not values:
        raise InputError(f"ess_factors={values!r} is not allowed; give a non-empty list of numbers or 'auto'")
    numbers = _grid({"ess_factors": [v for v in values if v != AUTO] or [1.0]}, "ess_factors", positive=True)
    if AUTO in values and not float(cfg.get("val_fraction") or 0) > 0:
        raise InputError("ess_factors: 'auto' chooses ess on a validation split; set val_fraction > 0")
    it = iter(numbers)
    return [AUTO if v == AUTO else next(it) for v in values]


def _check_options(cfg: dict[str, Any]) -> None:
    """``method_options``: {method or family (ivon, sgd): {TrainConfig field: value}}; ``corruption_options``:
    {corruption: {...}}; ``train``: {TrainConfig field: value}. InputError naming the bad entry otherwise."""
    names = ("ivon", "sgd", *METHODS)
    options = cfg.get("method_options") or {}
    if isinstance(options, dict):
        bad = [k for k, v in options.items() if k not in names or not isinstance(v, dict)]
    else:
        bad = [options]
    if bad:
        raise InputError(f"method_options: {bad[0]!r} is not allowed; use {{method: {{option: value}}}} with a "
                         f"method of {', '.join(names)}")  # fmt: skip
    for key in ("corruption_options", "train"):
        value = cfg.get(key) or {}
        if not isinstance(value, dict) or (key == "corruption_options" and
                                           not all(isinstance(v, dict) for v in value.values())):  # fmt: skip
            raise InputError(f"{key}={value!r} is not allowed; it must be a mapping")


def train_config(cfg: dict[str, Any], method: str, corruption: str, seed: int, **options: Any) -> dict[str, Any]:
    """The TrainConfig dict of one run: the preset's common keys, ``train`` (all methods), ``method_options[m]``,
    ``corruption_options[corruption]["all" | m]`` (per-setting values such as the paper's Table 1), then ``options``."""
    base = {k: cfg[k] for k in _TRAIN_KEYS if k in cfg}
    _check_options(cfg)
    per_corruption = (cfg.get("corruption_options") or {}).get(corruption, {})
    family = "ivon" if method.startswith("ivon") else "sgd"
    per_corruption = {k: v for k, v in per_corruption.items() if isinstance(v, dict)}  # lists: grids (see grid)
    merged = {
        **base,
        **(cfg.get("train") or {}),
        **(cfg.get("method_options") or {}).get(family, {}),
        **(cfg.get("method_options") or {}).get(method, {}),
        **per_corruption.get("all", {}),
        **per_corruption.get(family, {}),
        **per_corruption.get(method, {}),
        "method": method,
        "seed": int(seed),
        **options,
    }
    if "noisy_labels" not in merged or merged["noisy_labels"] is None:
        merged.setdefault("corruption", corruption)
    return merged


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def run_config(
    cfg: dict[str, Any], method: str, corruption: str, seed: int, *, extra_tags: dict | None = None, **hp: Any
) -> dict[str, Any]:
    """One sweep configuration ``{"name", "tags", "train"}``. ``hp``: alpha, rho, ess_factor, h0 (-> hess_init)."""
    tags = dict.fromkeys(TAGS, "")
    tags.update(method=method, corruption=corruption, seed=int(seed), **(extra_tags or {}))
    options = {}
    for key, value in hp.items():
        tags[key] = value
        if key == "ess_factor" and value == AUTO:
            options["ess"] = AUTO  # nothing given: the engine chooses ess
        else:
            options["hess_init" if key == "h0" else key] = value
    name = "_".join(
        [corruption.replace(":", "-"), method]
        + [f"{k}{_fmt(v)}" for k, v in (extra_tags or {}).items()]
        + [f"{k}{_fmt(v)}" for k, v in hp.items()]
        + [f"s{seed}"]
    )
    return {"name": name, "tags": tags, "train": train_config(cfg, method, corruption, seed, **options)}


def check_configs(configs: Sequence[dict]) -> None:
    """Resolve every run's TrainConfig and build each distinct corruption model for its dataset before anything runs,
    so a bad key or an invalid corruption (e.g. a class-dependent row outside [0, 1]) fails at once with InputError."""
    from ..data.corruption import parse_corruption, transition_matrix

    seen = set()
    for c in configs:
        t = resolve_config(TrainConfig.from_dict(c["train"]))
        key = (t.dataset, t.data_dir, repr(sorted(t.data_options.items())), t.corruption)
        if key not in seen and parse_corruption(t.corruption).kind.value != "none":
            seen.add(key)
            transition_matrix(parse_corruption(t.corruption), load_cached(c["train"]).num_classes)


# ---------------------------------------------------------------------------------------------------------------
# running


def label_noise_stats(result) -> dict[str, float]:
    """IVON's expected label noise over the training examples (module docstring); {} for point estimates."""
    if result.train_probs_pred is None or result.train_probs is None:
        return {}
    run = result.run
    pos = run.train_pos
    mask = None if run.flip_mask is None else run.flip_mask[pos]
    p_mean, p_pred = result.train_probs[pos], result.train_probs_pred[pos]
    summary = noise_summary(p_mean, p_pred, labels=run.labels[pos], flip_mask=mask)
    return {f"label_noise_{k}": v for k, v in summary.items() if k != "l2"}


def compare_run(cfg: dict[str, Any], run_dir: Path, *, callbacks: Sequence = ()) -> dict[str, float]:
    """Sweep run function: one engine run (resumed from its checkpoint if any) -> its numeric final metrics plus
    :func:`label_noise_stats`."""
    result = train_sweep_run(cfg, run_dir, callbacks=callbacks)
    metrics = numeric_metrics(result.metrics)
    metrics.update(label_noise_stats(result))
    return metrics


def run_grid(configs: Sequence[dict], out: Path, runtime) -> tuple[list[dict], list[tuple[dict, dict | None]]]:
    """Run the unfinished configs (runtime: jobs, shard, progress) and rewrite ``results.csv`` from every
    finished run on disk; returns (tidy rows, [(config, metrics or None)])."""
    from .sweep import failed_runs, run_sweep

    check_configs(configs)
    results = run_sweep(configs, out, RUN_FN, jobs=runtime.jobs, shard=runtime.shard, progress=runtime.progress,
                        retry_failed=runtime.retry_failed, executor=runtime.executor,
                        gpus_per_run=runtime.gpus_per_run, cpus_per_run=runtime.cpus_per_run)  # fmt: skip
    rows = tidy_rows(results, list(METRICS), failed_runs([c for c, m in results if m is None], out))
    if rows:
        write_results(out, rows)
    rows = [r for r in rows if r["metric"] != "failed"]  # results.csv lists the failures; the analysis does not
    return rows, results


def records(results: Iterable[tuple[dict, dict | None]]) -> list[dict[str, Any]]:
    """Finished runs as flat dicts: tags plus metrics."""
    return [{**c["tags"], **m} for c, m in results if m is not None]


# ---------------------------------------------------------------------------------------------------------------
# selecting and summarising


def _stats(values: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {
        "mean": float(arr.mean()),
        "std": std,
        "n": int(arr.size),
        "text": mean_std(float(arr.mean()), std, arr.size),
    }


def select(
    recs: Sequence[dict],
    *,
    hp: Sequence[str],
    report: str,
    by: str | None,
    fixed: dict[str, Any] | None = None,
    also: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """Pick one hyperparameter setting of ``recs`` (runs of one method in one setting) and report it.

    ``fixed``: use that setting; else the setting with the highest mean over seeds of metric ``by`` (ties: the first
    in grid order). Returns ``{"chosen": {hp: value}, "mean", "std", "n", "text", "values": {seed: value},
    "selected_by"}`` for metric ``report`` at the chosen setting, or None when nothing fits. ``also``:
    ``{key: metric}`` other metrics at the chosen setting, each added as ``key: {"mean", "std", "n", "text"}``.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in recs:
        groups.setdefault(tuple(r.get(k) for k in hp), []).append(r)
    if fixed is not None:
        key = tuple(fixed.get(k) for k in hp)
        if key not in groups:
            return None
    else:
        scored = [(k, [r[by] for r in g if by in r]) for k, g in groups.items()]
        scored = [(k, float(np.mean(v))) for k, v in scored if v]
        if not scored:
            return None
        key = max(scored, key=lambda kv: kv[1])[0]  # max keeps the first of equal scores
    vals = {int(r["seed"]): float(r[report]) for r in groups[key] if report in r}
    if not vals:
        return None
    extra = {}
    for name, metric in (also or {}).items():
        got = [float(r[metric]) for r in groups[key] if metric in r]
        if got:
            extra[name] = _stats(got)
    return {
        "chosen": dict(zip(hp, key, strict=True)),
        **_stats(list(vals.values())),
        "values": vals,
        "selected_by": "fixed" if fixed is not None else by,
        **extra,
    }


# (row label, method, hyperparameter tags) of a comparison table
BASELINES = (("ERM", "erm", ()), ("best LS", "ls", ("alpha",)), ("best SAM", "sam", ("rho",)))


def compare_table(
    recs: Sequence[dict],
    *,
    setting: str,
    ivon_fixed: dict[Any, dict[str, Any]],
    protocols: Sequence[str],
    ivon_method: str = "ivon",
) -> list[dict[str, Any]]:
    """Rows ``{setting, protocol, method, chosen, hp, mean, std, n, text, values, nll, ece}`` for ERM, best LS,
    best SAM, IVON (mean) and IVON (predictive) in each value of column ``setting`` under each protocol: test
    accuracy (``mean`` ...), and test NLL and ECE (``{"mean", "std", "n", "text"}``) at the chosen setting
    (``hp``: ``{tag: value}``). ``ivon_fixed``: ``{setting value: {hp: value}}``, IVON's fixed setting of the paper
    protocol."""
    rows = []
    for value in dict.fromkeys(r[setting] for r in recs):
        here = [r for r in recs if r[setting] == value]
        for protocol in protocols:
            fair = protocol == "fair"
            entries = [
                (label, method, hp, "test_acc", "val_acc" if fair else "test_acc", None)
                for label, method, hp in BASELINES
            ]
            entries += [
                ("IVON (mean)", ivon_method, ("ess_factor", "h0"), "test_acc", "val_acc",
                 None if fair else ivon_fixed.get(value)),
                ("IVON (pred.)", ivon_method, ("ess_factor", "h0"), "test_pred_acc", "val_pred_acc",
                 None if fair else ivon_fixed.get(value)),
            ]  # fmt: skip
            for label, method, hp, report, by, fixed in entries:
                pre = "test_pred_" if report == "test_pred_acc" else "test_"
                sel = select([r for r in here if r["method"] == method], hp=hp, report=report, by=by, fixed=fixed,
                             also={"nll": f"{pre}nll", "ece": f"{pre}ece"})  # fmt: skip
                if sel is not None:
                    chosen = ", ".join(f"{k}={_fmt(v)}" for k, v in sel["chosen"].items()) or "-"
                    rows.append({setting: value, "protocol": protocol, "method": label, **sel, "chosen": chosen,
                                 "hp": sel["chosen"], "run_method": method})  # fmt: skip
    return rows


def protocols_for(cfg: dict) -> list[str]:
    """``["paper", "fair"]``, or only ``["paper"]`` when there is no validation split."""
    return ["paper", "fair"] if float(cfg.get("val_fraction") or 0) > 0 else ["paper"]


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


def ivon_noise_summary(recs: Sequence[dict], *, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Mean over seeds of IVON's induced label noise and sigma per ``keys`` value (e.g. noise, ess_factor, h0)."""
    cols = ("label_noise_l1", "label_noise_on_label", "label_noise_l1_noisy", "label_noise_l1_clean",
            "sigma_mean", "sigma_median", "ess", "test_acc", "test_pred_acc")  # fmt: skip
    groups: dict[tuple, list[dict]] = {}
    for r in recs:
        if str(r.get("method", "")).startswith("ivon"):
            groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    out = []
    for key, g in groups.items():
        row = dict(zip(keys, key, strict=True))
        for c in cols:
            vals = [r[c] for r in g if c in r]
            if vals:
                row[c] = float(np.mean(vals))
        row["n"] = len(g)
        out.append(row)
    return out


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
    from ._claims import comparison_claims

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
