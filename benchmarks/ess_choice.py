"""What ``ess: auto`` chose, and what each candidate was worth: one row per candidate of every auto run in sweeps.

Reads ``RUN/config.json["ess_search"]`` of every IVON run with ``ess_factor`` "auto" under each sweep folder given
(``varsmooth run noisy-accuracy ... --out SWEEP``). Each candidate's record holds its noisy-validation scores at the
end of its run and, never used for the choice, its test accuracy at the mean and at the predictive. Prints a
markdown table (chosen candidate marked), then per sweep and setting how often each score (``val_acc``,
``val_pred_acc``, ``val_pred_nll``) picks the candidate with the best test accuracy of the mean, and the test
points each loses against that best candidate (mean over seeds).

``--grid F F ...`` replays another grid instead: its candidates are taken from the search record and from the
sweep's own runs at a fixed ``ess_factor`` with the same tags and seed (a fixed-ess run trains exactly as that
candidate would: same config, same seed), and the table reports the replayed choice with ``val_acc``.

    python benchmarks/ess_choice.py runs/noisy-accuracy-cpu-full runs/noisy-accuracy-memorize
    python benchmarks/ess_choice.py runs/hessian-init-cpu --grid 1 0.25 0.0625
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from varsmooth.engine.ess_search import SCORED, rank_key
from varsmooth.engine.trainconfig import ESS_SCORES


def _setting_key(tags: dict) -> tuple:
    """A run's tags without its ess factor: the runs of one (setting, seed) share it."""
    return tuple(sorted((k, str(v)) for k, v in tags.items() if k != "ess_factor"))


def _auto_runs(sweep: Path, grid: list[float] | None):
    """(run name, setting, search record) of every ess-auto run; with ``grid``, the record's rung holds that grid's
    candidates (from the record and the sweep's fixed-ess runs of the same tags) and ``chosen_factor`` is replayed."""
    fixed = {}
    for res in sweep.glob("runs/*/result.json"):
        run = json.loads(res.read_text())
        tags = run["config"]["tags"]
        if tags.get("method") == "ivon" and tags.get("ess_factor") not in ("auto", "", None):
            fixed[_setting_key(tags), float(tags["ess_factor"])] = {k: run["metrics"].get(k) for k in SCORED}
    for cfg_file in sorted(sweep.glob("runs/*/config.json")):
        record = json.loads(cfg_file.read_text()).get("ess_search")
        if not record:
            continue
        tags = json.loads((cfg_file.parent / "result.json").read_text())["config"]["tags"]
        setting = "_".join(str(v) for k, v in tags.items() if k not in ("method", "seed", "ess_factor") and v != "")
        if grid is not None:
            key = _setting_key(tags)
            have = {**{float(f): v for f, v in record["rungs"][-1]["scores"].items()},
                    **{f: v for (k, f), v in fixed.items() if k == key}}  # fmt: skip
            missing = [f for f in grid if f not in have]
            if missing:
                raise SystemExit(f"{cfg_file.parent.name}: no run for ess factor {missing} in {sweep}")
            scores = {f"{f:g}": have[f] for f in grid}
            chosen = min(scores, key=lambda f: rank_key(scores[f], "val_acc"))
            record = {**record, "rungs": [{**record["rungs"][-1], "scores": scores}], "chosen_factor": float(chosen)}
        yield cfg_file.parent.name, setting, record


def _pick(scores: dict, rule: str) -> str:
    """The candidate the search would keep when ranking by ``rule``."""
    return min(scores, key=lambda f: rank_key(scores[f], rule))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweeps", nargs="+", type=Path, help="sweep output folders")
    p.add_argument("--grid", nargs="+", type=float, default=None, help="replay this grid of ess factors")
    args = p.parse_args(argv)
    print("| sweep | run | ess / N | epoch | val acc (mean) | val acc (pred.) | val NLL (pred.) | test acc (mean) "
          "| test acc (pred.) |")
    print("|---|---|---|---|---|---|---|---|---|")
    losses: dict[tuple[str, str, str], list[float]] = {}
    chosen_acc: dict[tuple[str, str, str], list[float]] = {}
    for sweep in args.sweeps:
        for name, setting, record in _auto_runs(sweep, args.grid):
            rung = record["rungs"][-1]
            scores = rung["scores"]
            for f, s in scores.items():
                mark = " **(chosen)**" if f == f"{record['chosen_factor']:g}" else ""
                cells = [s.get(k) for k in ("val_acc", "val_pred_acc", "val_pred_nll", "test_acc", "test_pred_acc")]
                text = [f"{100 * v:.1f}" if v is not None and k != 2 else (f"{v:.4f}" if v is not None else "-")
                        for k, v in enumerate(cells)]  # fmt: skip
                print(f"| {sweep.name} | {name} | {f}{mark} | {rung['epochs']} | " + " | ".join(text) + " |")
            best = max(scores, key=lambda f: scores[f].get("test_acc") or 0)
            for rule in ESS_SCORES:
                acc = scores[_pick(scores, rule)]["test_acc"]
                losses.setdefault((sweep.name, setting, rule), []).append(100 * (scores[best]["test_acc"] - acc))
                chosen_acc.setdefault((sweep.name, setting, rule), []).append(100 * acc)
    print("\n| sweep | setting | score | runs choosing the best-test candidate | test points lost (mean) | test acc of "
          "the choice (mean) |")
    print("|---|---|---|---|---|---|")
    for (sweep, setting, rule), lost in losses.items():
        hits = sum(v == 0 for v in lost)
        acc = statistics.mean(chosen_acc[sweep, setting, rule])
        print(f"| {sweep} | {setting} | {rule} | {hits} / {len(lost)} | {statistics.mean(lost):.2f} | {acc:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
