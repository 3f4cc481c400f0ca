"""Noise gallery (paper Fig. 1 and 3): which training examples IVON's posterior gives the most label noise.

Paper: "Variational Learning Induces Adaptive Label Smoothing" (2025), Sec. 3.4 and 4.1: IVON's posterior turns
label ``y_i`` into ``y_i + eps_i``, ``eps_i = softmax(f_i(m)) - E_q[softmax(f_i(theta))]`` (Eq. 15), while label
smoothing adds the same ``alpha (u - e_{y_i})`` to every example (Eq. 1); :mod:`varsmooth.gallery` holds the
equations, the arrays and the figures.

The experiment: one IVON run at ``ess_factor`` x N (a one-run sweep, :func:`.sweep.run_sweep`), then
:func:`varsmooth.gallery.write_gallery`. Files in ``OUT``: ``runs/ivon/`` (the engine's run folder), ``noise.npz``,
``top_bottom.csv``, ``results.csv`` (tidy summary: method, metric, value, seed), ``top_noise.png`` /
``bottom_noise.png`` (Fig. 3), ``class_pair.png`` (Fig. 1), ``noise_histogram.png`` and, when the true labels are
known, ``suspects_predictive.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from ..gallery import image_fn, ivon_gallery, write_gallery
from . import Runtime
from . import _compare as C
from ._common import named_run, sweep_finished, torch_threads, train_sweep_run, write_results

ID = "noise-gallery"
DESCRIPTION = (
    "Fig. 1, 3: per-example label noise of IVON's posterior (3-layer CNN, MNIST) vs LS's constant noise: "
    "highest/lowest-noise training images, a regular vs an atypical example, noise histogram"
)


def configs(cfg: dict[str, Any], *, progress: bool = False) -> list[dict[str, Any]]:
    """The one IVON run (a :mod:`._compare` configuration named ``ivon``) at ``ess_factor`` x N."""
    C.require_data(cfg)
    c = C.run_config(cfg, "ivon", str(cfg["corruption"]), int(cfg["seed"]), ess_factor=cfg["ess_factor"])
    return [named_run(c, "ivon", cfg, progress=progress)]


def check_gallery_options(cfg: dict[str, Any]) -> None:
    """InputError unless ``ls_alpha`` is in [0, 1], ``top_k`` and ``noise_samples`` are positive integers and
    ``pair_class`` is null or a class index (checked before any training)."""
    alpha, top_k, samples, pair = cfg.get("ls_alpha", 0.1), cfg["top_k"], cfg["noise_samples"], cfg.get("pair_class")
    if not 0 <= alpha <= 1:
        raise InputError(f"ls_alpha={alpha} is not allowed; it must be in [0, 1]")
    for key, value in (("top_k", top_k), ("noise_samples", samples)):
        if not isinstance(value, int) or not 1 <= value <= 10**6:
            raise InputError(f"{key}={value!r} is not allowed; it must be an integer in [1, 10**6]")
    if pair is not None and not (isinstance(pair, int) and 0 <= pair < 10**6):
        raise InputError(f"pair_class={pair!r} is not allowed; it must be null or a class index >= 0")


def run(cfg: dict[str, Any], out: Path, runtime=None) -> dict:
    runtime = runtime or Runtime()
    progress = bool(cfg.get("progress", True)) and runtime.progress
    seed = int(cfg["seed"])
    check_gallery_options(cfg)
    sweep = configs(cfg, progress=progress)
    C.check_configs(sweep)
    with torch_threads(cfg.get("threads")):
        results, finished = sweep_finished(sweep, out, runtime, C.RUN_FN)
        if not finished:  # another shard's run
            return {"description": DESCRIPTION, **C.progress_note(results, out)}
        result = train_sweep_run(sweep[0], out / "runs" / "ivon")  # the finished run, evaluated again
        g = ivon_gallery(
            result,
            samples=int(cfg["noise_samples"]),
            seed=seed,
            method=cfg.get("noise_method", "mc"),
            progress=progress,
        )
        data = result.run.data
        summary, rows = write_gallery(
            out,
            g,
            image_fn(result.run, g),
            num_classes=data.num_classes,
            class_names=data.class_names,
            alpha=float(cfg["ls_alpha"]),
            top_k=int(cfg["top_k"]),
            pair_class=cfg.get("pair_class"),
            seed=seed,
        )
    m = result.metrics
    for metric in ("test_acc", "test_pred_acc", "test_nll", "test_pred_nll", "sigma_mean"):
        if metric in m:
            rows.append({"method": "ivon", "metric": metric, "value": float(m[metric]), "seed": seed})
    write_results(out, rows)
    return {
        "description": DESCRIPTION,
        **summary,
        "ess": float(result.config.ess),
        "ivon_test_acc": float(m["test_acc"]),
        "ivon_test_pred_acc": float(m.get("test_pred_acc", float("nan"))),
    }
