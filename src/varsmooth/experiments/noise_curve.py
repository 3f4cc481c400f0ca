"""Label-noise magnitude against the mean of the model output (paper Fig. 2, Sec. 3.1).

Paper: "Variational Learning Induces Adaptive Label Smoothing" (2025). For logistic regression under
``q_t(f) = N(f_mean, v)`` (Eq. 11) the label noise is ``eps = sigmoid(f_mean) - E_q[sigmoid(f)]`` (Eq. 12), computed
exactly by :func:`varsmooth.noise.bernoulli_noise`. Fig. 2 plots ``|eps|`` against ``f_mean`` at ``v = 1``: zero at
``f_mean = 0``, largest slightly away from 0 on both sides, decaying in the tails; larger variances give more noise.

Config: ``f_min``, ``f_max``, ``points`` (the f_mean grid), ``variances`` (list; the Fig. 2 curve is ``v = 1``).
Outputs: ``results.csv`` (``f_mean, variance, noise, magnitude``), ``noise_curve.png`` (|eps| per variance),
``noise_curve_signed.png`` (eps). Summary: per variance the peak location and height and the shape checks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .. import plots
from ..errors import InputError
from ..io import write_csv
from ..noise import bernoulli_noise

ID = "noise-curve"
DESCRIPTION = "Fig. 2: exact logistic label-noise magnitude |eps| vs f_mean at variance 1 (and others)"


def _grid(cfg: dict[str, Any]) -> tuple[np.ndarray, list[float]]:
    lo, hi, n = cfg["f_min"], cfg["f_max"], cfg["points"]
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lo, hi))
    if not (isinstance(n, int) and 3 <= n <= 10**7) or not (numbers and np.isfinite([lo, hi]).all() and lo < 0 < hi):
        raise InputError(
            f"need finite f_min < 0 < f_max and 3 <= points <= 10**7, got f_min={lo}, f_max={hi}, points={n}"
        )
    variances = cfg["variances"]
    ok = isinstance(variances, list) and variances and all(isinstance(v, int | float) for v in variances)
    if not ok or any(isinstance(v, bool) or not (0 <= v < math.inf) for v in variances):
        raise InputError(f"variances must be a non-empty list of numbers >= 0, got {variances!r}")
    f = np.unique(np.concatenate([np.linspace(lo, hi, n), [0.0]]))  # f_mean = 0 is always on the grid
    return f, [float(v) for v in variances]


def shape_summary(f: np.ndarray, noise: np.ndarray) -> dict[str, Any]:
    """Peak location / height on each side of 0 and Fig. 2's shape checks for one noise curve."""
    mag = np.abs(noise)
    zero = int(np.argmin(np.abs(f)))
    neg, pos = int(np.argmax(mag[:zero])), zero + 1 + int(np.argmax(mag[zero + 1 :]))
    return {
        "noise_at_zero": float(noise[zero]),
        "peak_f_mean_neg": float(f[neg]),
        "peak_f_mean_pos": float(f[pos]),
        "peak_magnitude": float(max(mag[neg], mag[pos])),
        "zero_at_origin": bool(noise[zero] == 0.0),
        "peaks_off_origin": bool(neg < zero - 1 and pos > zero + 1),
        "decays_in_tails": bool(mag[0] < 0.5 * mag[neg] and mag[-1] < 0.5 * mag[pos]),
    }


def run(cfg: dict[str, Any], out: Path, runtime=None) -> dict[str, Any]:
    f, variances = _grid(cfg)
    rows, curves, signed, summary = [], {}, {}, {}
    for v in variances:
        noise = bernoulli_noise(f, v)
        rows += [
            {"f_mean": float(a), "variance": v, "noise": float(b), "magnitude": abs(float(b))}
            for a, b in zip(f, noise, strict=True)
        ]
        curves[f"v = {v:g}"], signed[f"v = {v:g}"] = np.abs(noise), noise
        if v > 0:
            summary[f"v={v:g}"] = shape_summary(f, noise)
    write_csv(out / "results.csv", rows, ["f_mean", "variance", "noise", "magnitude"])
    plots.line_plot(
        f,
        curves,
        out / "noise_curve.png",
        xlabel="mean of q(f)  (f_mean)",
        ylabel="label noise magnitude |eps|",
        title="Fig. 2: |sigmoid(f_mean) - E_q[sigmoid(f)]|",
    )
    plots.line_plot(
        f,
        signed,
        out / "noise_curve_signed.png",
        xlabel="f_mean",
        ylabel="label noise eps",
        title="Eq. 12: signed label noise",
    )
    fig2 = summary.get("v=1")
    return {
        "points": int(f.size),
        "variances": variances,
        "fig2": fig2,
        "per_variance": summary,
        "fig2_shape_ok": bool(fig2 and fig2["zero_at_origin"] and fig2["peaks_off_origin"] and fig2["decays_in_tails"]),
    }
