"""Class-dependent label noise: IVON vs best LS, best SAM and ERM (paper Fig. 7; Sec. 4.3.2, Eq. 20-21).

Class i (1-based) keeps its label with probability ``P_ii = 1 - (kappa + beta i)`` and flips to each other class
with ``(kappa + beta i) / (K - 1)``, for every ``kappa`` in ``kappas`` (paper: 0.1 to 0.5) and ``beta`` (0.05).
Per kappa and seed: ERM, LS over ``alphas``, SAM over ``rhos``, IVON over ``ess_factors`` x ``hess_inits``; best
LS/SAM under the *paper* (test set) and *fair* (validation split) protocols of :mod:`.selection`.

Outputs: ``results.csv`` (tags include ``kappa``), ``selection.csv``, ``table.md``, ``summary_<protocol>.png``
(grouped bars per kappa: ERM, best LS, best SAM, IVON at the mean and predictive) and
``accuracy_vs_hyperparameter.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.corruption import parse_corruption
from ..errors import InputError
from .comparison import run_comparison
from .grids import grid, require_data

ID = "class-dependent"
DESCRIPTION = "Fig. 7: class-dependent corruption (kappa 0.1-0.5, beta 0.05): IVON vs best LS, best SAM, ERM"


def settings(cfg: dict[str, Any]) -> list[tuple[float, str, dict]]:
    """``(kappa, corruption spec, {"kappa": kappa})`` per kappa; invalid rows (kappa + beta K > 1) are InputErrors."""
    kappas = grid(cfg, "kappas", upper=1.0)
    beta = cfg.get("beta")
    if isinstance(beta, bool) or not isinstance(beta, int | float) or beta < 0:
        raise InputError(f"beta={beta!r} is not allowed; it must be a number >= 0")
    out = []
    for kappa in kappas:
        corruption = f"class-dependent:{kappa:g}:{float(beta):g}"
        parse_corruption(corruption)
        out.append((kappa, corruption, {"kappa": kappa}))
    return out


def run(cfg: dict[str, Any], out: Path, runtime=None) -> dict[str, Any]:
    from . import Runtime

    require_data(cfg)
    summary = run_comparison(cfg, out, runtime or Runtime(), settings(cfg), setting="kappa")
    return {"beta": cfg["beta"], **summary}
