"""Selection protocols: which run of a grid a comparison reports (paper App. C; docs/design.md).

Comparisons select hyperparameters two ways from the same runs:

- *paper*: each baseline at its best grid value on the test set (the peak of the mean-over-seeds curve, as in
  App. C), IVON at fixed settings (the first ``ess_factors`` and ``hess_inits`` entries);
- *fair*: every method's hyperparameters (LS alpha, SAM rho, IVON ess/h0) chosen by the mean over seeds of the
  accuracy on a validation split carved from the *noisy* training pool (``val_fraction``); the clean test set is
  read once, at the chosen value. Needs ``val_fraction > 0``. Under symmetric corruption accuracy on noisy labels
  is an increasing affine function of clean accuracy, ``(1 - r) a + r (1 - a) / (K - 1)``, so the noisy split ranks
  settings as a clean one would, up to sampling error.

Both protocols read the same runs (all trained on the same ``1 - val_fraction`` of the pool); they differ only in
the selection rule. IVON is reported at the mean (``test_acc``) and as posterior predictive (``test_pred_acc``; the
fair protocol selects the latter by ``val_pred_acc``).

A run's record (:func:`records`) is its tags plus its metrics; :func:`stats` is the one mean / sample std / n over
seeds every table shows; :func:`select` picks one setting, :func:`compare_table` applies a protocol to every method.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..report.tables import mean_std
from .grids import fmt

# (row label, method, hyperparameter tags) of a comparison table
BASELINES = (("ERM", "erm", ()), ("best LS", "ls", ("alpha",)), ("best SAM", "sam", ("rho",)))


def records(results: Iterable[tuple[dict, dict | None]]) -> list[dict[str, Any]]:
    """Finished runs as flat dicts: tags plus metrics."""
    return [{**c["tags"], **m} for c, m in results if m is not None]


def stats(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std" (sample, ddof=1; 0 for one value), "n", "text" ("0.912 ± 0.004")}`` of ``values``."""
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
            extra[name] = stats(got)
    return {
        "chosen": dict(zip(hp, key, strict=True)),
        **stats(list(vals.values())),
        "values": vals,
        "selected_by": "fixed" if fixed is not None else by,
        **extra,
    }


def chosen_text(chosen: dict[str, Any]) -> str:
    """A selection's hyperparameters as the tables show them: ``"alpha=0.1, h0=0.5"``, ``"-"`` for none."""
    return ", ".join(f"{k}={fmt(v)}" for k, v in chosen.items()) or "-"


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
                    rows.append({setting: value, "protocol": protocol, "method": label, **sel,
                                 "chosen": chosen_text(sel["chosen"]), "hp": sel["chosen"],
                                 "run_method": method})  # fmt: skip
    return rows


def protocols_for(cfg: dict) -> list[str]:
    """``["paper", "fair"]``, or only ``["paper"]`` when there is no validation split."""
    return ["paper", "fair"] if float(cfg.get("val_fraction") or 0) > 0 else ["paper"]


def ivon_noise_summary(recs: Sequence[dict], *, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Mean over seeds of IVON's induced label noise and sigma per ``keys`` value (e.g. noise, ess_factor, h0)."""
    cols = ("train_noise_l1", "train_noise_on_label", "train_noise_l1_noisy", "train_noise_l1_clean",
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
