"""Test accuracy under synthetic label noise: LS alpha and SAM rho grids, ERM and IVON (paper Fig. 5, 8; Sec. 4.3.1).

For each corruption (``corruptions``: symmetric 20%, symmetric 40%, pair-flip 20%) and seed: ERM, LS over ``alphas``,
SAM over ``rhos`` and IVON over ``ess_factors`` x ``hess_inits`` (ess = factor x training-set size; the paper uses
ess = N, h0 = 0.9). Reports the *paper* and *fair* protocols side by side (see :mod:`.selection`), IVON at the
mean and as posterior predictive, and the label noise IVON induced at each ess.

Outputs: ``results.csv`` (one row per run and metric), ``selection.csv`` and ``table.md`` (ERM, best LS, best SAM,
IVON per setting and protocol, mean ± std over seeds), ``accuracy_vs_hyperparameter.png`` (test accuracy vs alpha
and rho with ERM and IVON as horizontal bands over seeds, one band per ess), ``summary_<protocol>.png`` (bars).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .comparison import run_comparison
from .grids import corruptions

ID = "noisy-accuracy"
DESCRIPTION = "Fig. 5, 8: accuracy vs LS alpha / SAM rho with IVON and ERM under symmetric and pair-flip corruption"


def run(cfg: dict[str, Any], out: Path, runtime=None) -> dict[str, Any]:
    from . import Runtime

    settings = [(corruption, corruption, {}) for corruption in corruptions(cfg)]
    return run_comparison(cfg, out, runtime or Runtime(), settings, setting="corruption")
