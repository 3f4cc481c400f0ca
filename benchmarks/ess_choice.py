"""What ``ess: auto`` chose, and what each candidate was worth: one row per candidate of every auto run in sweeps.

Reads ``RUN/config.json["ess_search"]`` of every IVON run with ``ess_factor`` "auto" under each sweep folder given
(``varsmooth run noisy-accuracy ... --out SWEEP``). Each candidate's record holds its noisy-validation scores at the
end of its run and, never used for the choice, its test accuracy at the mean and at the predictive. Prints a
markdown table (chosen candidate marked), then per sweep and corruption how often each score (``val_acc``,
``val_pred_acc``, ``val_pred_nll``) picks the candidate with the best test accuracy of the mean, and the test
points each loses against that best candidate (mean over seeds).

    python benchmarks/ess_choice.py runs/noisy-accuracy-cpu-full runs/noisy-accuracy-memorize
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from varsmooth.engine.ess_search import rank_key
from varsmooth.engine.trainconfig import ESS_SCORES


def _auto_runs(sweep: Path):
    for cfg_file in sorted(sweep.glob("runs/*/config.json")):
        record = json.loads(cfg_file.read_text()).get("ess_search")
        if record:
            yield cfg_file.parent.name, record


def _pick(scores: dict, rule: str) -> str:
    """The candidate the search would keep when ranking by ``rule``."""
    return min(scores, key=lambda f: rank_key(scores[f], rule))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweeps", nargs="+", type=Path, help="sweep output folders")
    args = p.parse_args(argv)
    print("| sweep | run | ess / N | epoch | val acc (mean) | val acc (pred.) | val NLL (pred.) | test acc (mean) "
          "| test acc (pred.) |")
    print("|---|---|---|---|---|---|---|---|---|")
    losses: dict[tuple[str, str, str], list[float]] = {}
    for sweep in args.sweeps:
        for name, record in _auto_runs(sweep):
            (rung,) = record["rungs"][-1:]
            scores = rung["scores"]
            for f, s in scores.items():
                mark = " **(chosen)**" if f == f"{record['chosen_factor']:g}" else ""
                cells = [s.get(k) for k in ("val_acc", "val_pred_acc", "val_pred_nll", "test_acc", "test_pred_acc")]
                text = [f"{100 * v:.1f}" if v is not None and k != 2 else (f"{v:.4f}" if v is not None else "-")
                        for k, v in enumerate(cells)]  # fmt: skip
                print(f"| {sweep.name} | {name} | {f}{mark} | {rung['epochs']} | " + " | ".join(text) + " |")
            best = max(scores, key=lambda f: scores[f].get("test_acc") or 0)
            corruption = name.split("_")[0]
            for rule in ESS_SCORES:
                lost = scores[best]["test_acc"] - scores[_pick(scores, rule)]["test_acc"]
                losses.setdefault((sweep.name, corruption, rule), []).append(100 * lost)
    print("\n| sweep | corruption | score | runs choosing the best-test candidate | test points lost (mean) |")
    print("|---|---|---|---|---|")
    for (sweep, corruption, rule), lost in losses.items():
        hits = sum(v == 0 for v in lost)
        print(f"| {sweep} | {corruption} | {rule} | {hits} / {len(lost)} | {statistics.mean(lost):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
