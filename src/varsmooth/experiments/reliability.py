"""The reliability diagram of a method comparison (:mod:`.comparison`): calibration of the chosen runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import plots

# the reliability diagram's panels: a compare_table method label and whether it reads IVON's posterior predictive
_RELIABILITY = (("ERM", False), ("best LS", False), ("IVON (mean)", False), ("IVON (pred.)", True))


def reliability_figure(
    out: Path, table: Sequence[dict], configs: Sequence[dict], *, setting: str, seed: int
) -> Path | None:
    """``reliability.png``: reliability diagrams of ERM, best LS, IVON (mean) and IVON (predictive) as chosen by
    the fair protocol (the paper protocol without a validation split) in the first ``setting`` value, from the
    test probabilities in each run's ``arrays.npz`` at ``seed``; None when a run's arrays are missing."""
    if not table:
        return None
    protocol = "fair" if any(r["protocol"] == "fair" for r in table) else table[0]["protocol"]
    value = table[0][setting]
    chosen = {r["method"]: r for r in table if r["protocol"] == protocol and r[setting] == value}
    predictions = {}
    for label, predictive in _RELIABILITY:
        row = chosen.get(label)
        if row is None:
            continue
        match = [c for c in configs if c["tags"]["method"] == row["run_method"] and c["tags"][setting] == value
                 and c["tags"]["seed"] == seed and all(c["tags"][k] == v for k, v in row["hp"].items())]  # fmt: skip
        path = out / "runs" / match[0]["name"] / "arrays.npz" if match else None
        if path is None or not path.exists():
            return None
        with np.load(path) as arrays:
            probs = arrays["test_probs_pred" if predictive and "test_probs_pred" in arrays else "test_probs"]
            name = label if row["chosen"] == "-" else f"{label}, {row['chosen']}"
            predictions[name] = (arrays["test_labels"], probs)
    if not predictions:
        return None
    return plots.reliability_diagram(
        predictions, out / "reliability.png", title=f"{setting} = {value}, {protocol} protocol, seed {seed}"
    )
