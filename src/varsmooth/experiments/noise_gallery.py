"""Noise gallery (paper Fig. 1 and 3): which training examples IVON's posterior gives the most label noise.

Paper: "Variational Learning Induces Adaptive Label Smoothing" (2025), Sec. 3.4 and 4.1: IVON's posterior turns
label ``y_i`` into ``y_i + eps_i``, ``eps_i = softmax(f_i(m)) - E_q[softmax(f_i(theta))]`` (Eq. 15), while label
smoothing adds the same ``alpha (u - e_{y_i})`` to every example (Eq. 1); :mod:`.gallery` holds the
equations, the arrays and the figures.

The experiment: one IVON run at ``ess_factor`` x N (a one-run sweep, :func:`.sweep.run_sweep`), then
:func:`.gallery.write_gallery`. Files in ``OUT``: ``runs/ivon/`` (the engine's run folder), ``noise.npz``,
``top_bottom.csv``, ``results.csv`` (tidy summary: method, metric, value, seed), ``top_noise.png`` /
``bottom_noise.png`` (Fig. 3), ``class_pair.png`` (Fig. 1), ``noise_histogram.png`` and, when the true labels are
known, ``suspects_predictive.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import Runtime
from .common import named_run, sweep_finished, torch_threads, train_sweep_run, write_results
from .comparison import RUN_FN, progress_note
from .gallery import check_gallery_options, image_fn, ivon_gallery, write_gallery
from .grids import check_configs, require_data, run_config

ID = "noise-gallery"
DESCRIPTION = (
    "Fig. 1, 3: per-example label noise of IVON's posterior (3-layer CNN, MNIST) vs LS's constant noise: "
    "highest/lowest-noise training images, a regular vs an atypical example, noise histogram"
)


def configs(cfg: dict[str, Any], *, progress: bool = False) -> list[dict[str, Any]]:
    """The one IVON run (a :func:`.grids.run_config` configuration named ``ivon``) at ``ess_factor`` x N."""
    require_data(cfg)
    c = run_config(cfg, "ivon", str(cfg["corruption"]), int(cfg["seed"]), ess_factor=cfg["ess_factor"])
    return [named_run(c, "ivon", cfg, progress=progress)]


def run(cfg: dict[str, Any], out: Path, runtime=None) -> dict:
    runtime = runtime or Runtime()
    progress = bool(cfg.get("progress", True)) and runtime.progress
    seed = int(cfg["seed"])
    check_gallery_options(cfg)
    sweep = configs(cfg, progress=progress)
    check_configs(sweep)
    with torch_threads(cfg.get("threads")):
        results, finished = sweep_finished(sweep, out, runtime, RUN_FN)
        if not finished:  # another shard's run
            return {"description": DESCRIPTION, **progress_note(results, out)}
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
