"""The default demo (``varsmooth run``): IVON vs LS vs ERM under 40% symmetric label noise, and IVON's noise gallery.

Paper: "Variational Learning Induces Adaptive Label Smoothing" (2025): variational learning trains on
``y_i + eps_i`` with ``eps_i = softmax(f_i(m)) - E_q[softmax(f_i(theta))]`` (Sec. 3.4), the noise is largest on
atypical and mislabeled examples (Fig. 1, 3), and IVON copes with label errors better than label smoothing
(Sec. 4.3). On the bundled 5,000-image MNIST subset (no download) with 40% of the training labels flipped:

1. ``accuracy/``: ERM, LS and IVON (MLP 784-256-256-10). Hyperparameters are chosen honestly, on a validation
   split carved from the *noisy* training set (the "fair" protocol, docs/design.md): LS's alpha from ``ls_alphas``
   (one run each, the best by validation accuracy) and IVON's ess by the engine itself (IVON with nothing given,
   ``ess="auto"``: candidate factors of N trained to the end, the best on the same split kept,
   :mod:`varsmooth.engine.ess_search`;
   ``summary.json`` records the chosen factor and the search). Why ess is searched at all: ess sets the posterior
   width ``sigma^2 = 1 / (ess (h + delta))`` and so the amount of label noise; ess = N (the paper's default) can
   be too narrow under heavy noise, and too small an ess stops learning. Under symmetric noise, accuracy on noisy
   labels is an increasing affine function of clean accuracy
   (``(1 - r) a + r (1 - a) / (K - 1)``), so the noisy validation split ranks settings like a clean one would,
   up to sampling error. The clean test set is read once per run for the reported numbers.
2. ``noise-gallery/``: the selected IVON run's per-example label noise (see
   :mod:`.gallery`) against the known flips: the fraction of flipped labels among the
   ``top_k`` highest-noise examples vs the base rate, and AUROC. The highest-noise examples are the *ambiguous*
   ones the model is torn on, only modestly enriched in flips: IVON fits few of the flipped labels, so their
   softmax is saturated on the true class and their noise is small. IVON's posterior predictive ``1 - p_pred[y]``
   (from the same Monte-Carlo draws) ranks the flips first; ``suspects_predictive.png`` shows those (README for
   the numbers).

Each part is a folder with ``results.csv`` / ``summary.json`` / PNGs; engine runs live in ``runs/`` (a resumable
sweep, :func:`.sweep.run_sweep`); at the end :func:`varsmooth.report.write_report` writes ``OUT/report.html``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import plots
from ..errors import InputError
from ..io import read_json, write_json
from ..report.html import write_report
from . import Runtime
from .claims import comparison_claims
from .common import named_run, sweep_finished, torch_threads, train_sweep_run, write_results
from .comparison import RUN_FN, progress_note
from .gallery import check_gallery_options, image_fn, ivon_gallery, write_gallery
from .grids import AUTO, check_configs, grid, require_data, run_config
from .selection import chosen_text, select

ID = "demo"
DESCRIPTION = (
    "Default demo: MNIST subset with 40% symmetric label noise; ERM vs LS vs IVON with LS's alpha chosen on a noisy "
    "validation split and IVON's ess chosen there by the engine (ess auto); IVON's per-example label noise and "
    "posterior-predictive suspects vs the flipped labels"
)
# val_*clean_acc (validation accuracy on the true labels) is reported for reference only, never used to select
METRICS = (
    "val_acc",
    "val_pred_acc",
    "val_clean_acc",
    "val_pred_clean_acc",
    "test_acc",
    "test_pred_acc",
    "test_nll",
    "test_pred_nll",
    "test_ece",
    "test_pred_ece",
)
HYPER = {"ls": "alpha", "ivon": "ess_factor"}  # the hyperparameter chosen on the validation split, per method
IVON_RUN = "ivon-auto"


def configs(cfg: dict[str, Any], *, progress: bool = False) -> list[dict[str, Any]]:
    """The demo's sweep (:func:`.grids.run_config` configurations): ERM, LS over ``ls_alphas`` and IVON with ess
    chosen by the engine, named ``erm``, ``ls-alpha<a>`` and ``ivon-auto``; every run on the same ``test_subset``."""
    require_data(cfg)
    if not float((cfg.get("train") or {}).get("val_fraction") or 0) > 0:
        raise InputError("demo: train.val_fraction must be > 0 (hyperparameters are chosen on a validation split)")
    corruption, seed = str(cfg["corruption"]), int(cfg["seed"])
    runs = [("erm", "erm", {})]
    runs += [(f"ls-alpha{a}", "ls", {"alpha": a}) for a in grid(cfg, "ls_alphas", upper=1.0)]
    runs.append((IVON_RUN, "ivon", {"ess_factor": AUTO}))
    return [
        named_run(run_config(cfg, m, corruption, seed, **hp), name, cfg, progress=progress) for name, m, hp in runs
    ]


def selected(recs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method, the run with the best validation accuracy (IVON: predictive; ties: the first in grid order)."""
    best = {}
    for method in ("erm", "ls", "ivon"):
        runs = [r for r in recs if r["method"] == method]
        hp = (HYPER[method],) if method in HYPER else ()
        sel = select(runs, hp=hp, report="test_acc", by="val_pred_acc")
        best[method] = next(r for r in runs if all(r[k] == v for k, v in sel["chosen"].items()))
    return best


def run(cfg: dict[str, Any], out: Path, runtime=None) -> dict:
    runtime = runtime or Runtime()
    progress = bool(cfg.get("progress", True)) and runtime.progress
    seed = int(cfg["seed"])
    check_gallery_options(cfg)
    sweep = configs(cfg, progress=progress)
    check_configs(sweep)
    with torch_threads(cfg.get("threads")):
        results, finished = sweep_finished(sweep, out, runtime, RUN_FN)
        if not finished:  # runs of another shard, or failed runs
            return {"description": DESCRIPTION, **progress_note(results, out)}
        search = read_json(out / "runs" / IVON_RUN / "config.json")["ess_search"]
        recs = []
        for c, m in results:
            value = search["chosen_factor"] if c["name"] == IVON_RUN else c["tags"].get(HYPER.get(c["tags"]["method"]))
            rec = {"name": c["name"], "method": c["tags"]["method"], "value": value, "ess": m.get("ess")}
            rec.update({k: m[k] for k in METRICS if k in m})
            rec["val_pred_acc"] = rec.get("val_pred_acc", rec["val_acc"])  # point methods: predictive = mean
            rec["test_pred_acc"] = rec.get("test_pred_acc", rec["test_acc"])
            recs.append({**rec, HYPER.get(rec["method"], "-"): value, "seed": seed})
        best = selected(recs)
        ivon_cfg = next(c for c in sweep if c["name"] == IVON_RUN)
        chosen = train_sweep_run(ivon_cfg, out / "runs" / IVON_RUN)  # the finished run, evaluated again
        g = ivon_gallery(chosen, samples=int(cfg["noise_samples"]), seed=seed, progress=progress)
    acc_summary = accuracy_section(out / "accuracy", cfg, recs, best, search, n_train=len(g.labels))
    gal_summary = gallery_section(out / "noise-gallery", cfg, chosen, g, alpha=float(best["ls"]["value"]))
    det = gal_summary["detection"]
    table = comparison_rows(recs, str(cfg["corruption"]))
    summary = {
        "description": DESCRIPTION,
        "headline": headline(best, det),
        "claims": comparison_claims(table, setting="corruption", figure="Fig. 5"),
        "table": [{k: v for k, v in r.items() if k not in ("values", "hp", "run_method")} for r in table],
        "corruption": cfg["corruption"],
        "test_acc": {
            "erm": best["erm"]["test_acc"],
            "ls": best["ls"]["test_acc"],
            "ivon_mean": best["ivon"]["test_acc"],
            "ivon_predictive": best["ivon"]["test_pred_acc"],
        },
        "ls_alpha": best["ls"]["value"],
        "ivon_ess": best["ivon"]["ess"],
        "ivon_ess_factor": best["ivon"]["value"],
        "ivon_ess_search": acc_summary["ivon_ess_search"],
        "selection": "alpha by accuracy on a noisy validation split carved from the training set; ess chosen on the "
        "same split by the engine (ess auto)",
        "top_k": gal_summary["top_k"],
        "flipped_rate": det["flipped_rate"],
        "flipped_frac_top_k": det["flipped_frac_top_k"],
        "auroc_magnitude": det["auroc_magnitude"],
        "flipped_frac_top_k_predictive": det["flipped_frac_top_k_predictive"],
        "auroc_predictive": det["auroc_predictive"],
    }
    # run_experiment writes summary.json again after we return; the report needs it now
    preset = read_json(out / "config.json").get("preset", "") if (out / "config.json").exists() else ""
    write_json(out / "summary.json", {"experiment": ID, "preset": preset, **summary})
    write_report(out, title="varsmooth demo: adaptive label smoothing from variational learning")
    return summary


def comparison_rows(recs: list[dict[str, Any]], corruption: str) -> list[dict[str, Any]]:
    """The demo's selection as :func:`.selection.compare_table` rows (fair protocol, one setting): ERM, best LS
    (alpha by validation accuracy), IVON at the mean and predictive (the engine's ess choice), with test NLL and
    ECE at the chosen setting and ``values`` ({seed: test accuracy}) for :func:`.claims.comparison_claims`."""
    entries = (
        ("ERM", "erm", (), "test_", "val_acc"),
        ("best LS", "ls", ("alpha",), "test_", "val_acc"),
        ("IVON (mean)", "ivon", ("ess_factor",), "test_", "val_acc"),
        ("IVON (pred.)", "ivon", ("ess_factor",), "test_pred_", "val_pred_acc"),
    )
    rows = []
    for label, method, hp, pre, by in entries:
        sel = select([r for r in recs if r["method"] == method], hp=hp, report=f"{pre}acc", by=by,
                       also={"nll": f"{pre}nll", "ece": f"{pre}ece"})  # fmt: skip
        if sel is not None:
            chosen = chosen_text(sel["chosen"]) if method != "ivon" else ess_setting(sel["chosen"]["ess_factor"])
            rows.append({"corruption": corruption, "protocol": "fair", "method": label, **sel, "chosen": chosen,
                         "hp": sel["chosen"], "run_method": method})  # fmt: skip
    return rows


def ess_text(factor: float) -> str:
    """An ess factor as a multiple of N: 1 -> "N", 0.0625 -> "N/16", 2 -> "2N"."""
    f = float(factor)
    if f == 1:
        return "N"
    return f"N/{1 / f:g}" if f < 1 else f"{f:g}N"


def ess_setting(factor: float) -> str:
    """IVON's setting in the demo, the one way every table, chart and headline names it: ``"ess auto -> N/16"``."""
    return f"ess auto -> {ess_text(factor)}"


def ivon_name(factor: float) -> str:
    """``"IVON (ess auto -> N/16)"``: IVON as the demo's headline, chart and reliability diagram name it."""
    return f"IVON ({ess_setting(factor)})"


def headline(best: dict[str, dict[str, Any]], detection: dict[str, Any]) -> str:
    """One sentence of what the demo found, from its numbers: the selected methods' test accuracies (best first;
    IVON at the mean, with its predictive), the largest test ECE against the smallest, and the AUROC of IVON's
    posterior-predictive suspects against the flipped labels."""
    ls, ivon, erm = best["ls"], best["ivon"], best["erm"]
    accs = [
        (float(ls["test_acc"]), f"LS (alpha {float(ls['value']):g}) {100 * ls['test_acc']:.1f}%"),
        (float(ivon["test_acc"]), f"{ivon_name(ivon['value'])} {100 * ivon['test_acc']:.1f}% "
         f"(predictive {100 * ivon['test_pred_acc']:.1f}%)"),
        (float(erm["test_acc"]), f"ERM {100 * erm['test_acc']:.1f}%"),
    ]  # fmt: skip
    parts = [", ".join(text for _, text in sorted(accs, key=lambda a: -a[0]))]
    eces = sorted(((float(r["test_ece"]), name) for name, r in (("ERM", erm), ("LS", ls), ("IVON", ivon))
                   if "test_ece" in r), reverse=True)  # fmt: skip
    if len(eces) > 1:
        (hi, hi_name), (lo, lo_name) = eces[0], eces[-1]
        ratio = f" is {hi / lo:.1f}x" if lo > 0 else " against"
        parts.append(f"{hi_name}'s ECE {hi:.3f}{ratio} {lo_name}'s {lo:.3f}")
    auroc = detection.get("auroc_predictive")
    if auroc is not None and np.isfinite(auroc):
        parts.append(f"the suspects ranked by IVON's posterior predictive find the flipped labels with AUROC "
                     f"{float(auroc):.3f}")  # fmt: skip
    return "; ".join(parts)


def search_record(search: dict[str, Any]) -> dict[str, Any]:
    """The ess search as the demo reports it: grid, each rung's validation scores, the choice and its cost."""
    keys = ("grid", "score", "rungs", "chosen_factor", "chosen_ess", "cost_epochs", "cost_runs")
    return {k: search[k] for k in keys if k in search}


def _section(path: Path, title: str, description: str, summary: dict) -> None:
    write_json(path / "summary.json", {"experiment": title, "description": description, **summary})


def accuracy_section(
    path: Path, cfg: dict[str, Any], recs: list[dict], best: dict[str, dict], search: dict, *, n_train: int
) -> dict[str, Any]:
    """``accuracy/``: results.csv (every run and metric, the selected ones marked), accuracy.png, summary.json."""
    path.mkdir(parents=True, exist_ok=True)
    rows = [
        {"method": r["method"], "hyperparameter": HYPER.get(r["method"], ""), "hyper_value": r["value"],
         "selected": r is best[r["method"]], "metric": m, "value": r[m], "seed": r["seed"]}
        for r in recs for m in METRICS if m in r
    ]  # fmt: skip
    write_results(path, rows)
    sel = [best["erm"], best["ls"], best["ivon"]]
    labels = ["ERM", f"LS alpha={best['ls']['value']}", ivon_name(best["ivon"]["value"])]
    plots.bar_plot(
        labels,
        {
            "test accuracy (clean; IVON: predictive)": [r["test_pred_acc"] for r in sel],
            "validation accuracy (noisy labels)": [r["val_pred_acc"] for r in sel],
        },
        path / "accuracy.png",
        ylabel="accuracy",
        title=f"{cfg['corruption']} label noise, settings chosen on the noisy validation split",  # fmt: skip
    )
    figures = ["accuracy.png"]
    if reliability_figure(path, path.parent / "runs", best, corruption=str(cfg["corruption"])) is not None:
        figures.append("reliability.png")
    summary = {
        "protocol": "alpha chosen by validation accuracy (noisy labels), ess by the engine's search (candidates "
        "trained to the end) on the same split; test set read once per run",
        "n_train": n_train,
        **{
            f"{m}_selected": {k: best[m][k] for k in ("name", "value", "val_pred_acc", "test_acc", "test_pred_acc")}
            for m in best
        },
        "grid": {r["name"]: {"val": r["val_pred_acc"], "test": r["test_pred_acc"]} for r in recs},
        "ivon_ess_search": search_record(search),
        "figures": figures,
    }
    _section(path, "demo/accuracy", "ERM vs LS vs IVON test accuracy; alpha and ess chosen on a noisy validation split",
             summary)  # fmt: skip
    return summary


def reliability_figure(path: Path, runs: Path, best: dict[str, dict], *, corruption: str) -> Path | None:
    """``reliability.png``: reliability diagrams of the selected ERM, LS and IVON (at the mean and predictive) from
    the test probabilities in each run's ``arrays.npz``; None when a run's arrays are missing."""
    panels = (("ERM", "erm", False), (f"LS, alpha={float(best['ls']['value']):g}", "ls", False),
              (f"{ivon_name(best['ivon']['value'])}, mean", "ivon", False),
              (f"{ivon_name(best['ivon']['value'])}, predictive", "ivon", True))  # fmt: skip
    predictions = {}
    for label, method, predictive in panels:
        arrays_path = runs / best[method]["name"] / "arrays.npz"
        if not arrays_path.exists():
            return None
        with np.load(arrays_path) as arrays:
            probs = arrays["test_probs_pred" if predictive and "test_probs_pred" in arrays else "test_probs"]
            predictions[label] = (arrays["test_labels"], probs)
    return plots.reliability_diagram(
        predictions, path / "reliability.png", title=f"{corruption} label noise, the selected runs on the test set"
    )


def gallery_section(path: Path, cfg: dict[str, Any], result, g, *, alpha: float) -> dict[str, Any]:
    """``noise-gallery/``: the selected IVON run's label noise (:func:`.gallery.write_gallery`)."""
    path.mkdir(parents=True, exist_ok=True)
    data = result.run.data
    summary, rows = write_gallery(
        path,
        g,
        image_fn(result.run, g),
        num_classes=data.num_classes,
        class_names=data.class_names,
        alpha=alpha,
        top_k=int(cfg["top_k"]),
        pair_class=cfg.get("pair_class"),
        seed=int(cfg["seed"]),
        title="flipped labels marked 'true ...': ",
    )
    write_results(path, rows)
    _section(
        path,
        "demo/noise-gallery",
        "IVON's per-example label noise on the noisy training set vs the flipped labels, and the suspects of "
        "its posterior predictive 1 - p_pred[y]",
        summary,
    )
    return summary
