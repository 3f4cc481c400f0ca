"""``varsmooth run ID --preset P --plan``: what a sweep will cost, measured on this device, before it starts.

Nothing is trained or written. The run list comes from the experiment's own config builder (its ``configs``
function, or the comparison grid of :func:`varsmooth.experiments.comparison.comparison_configs` for
``noisy-accuracy``). Each run's length in optimizer steps follows from its resolved :class:`TrainConfig` and the
dataset's training-set size (``train_subset``, ``val_fraction``; IVON with ``ess: auto`` adds its
search, :func:`varsmooth.engine.ess_search.planned_cost`). The time per step is measured on synthetic batches of the
run's shape, per model and method kind (SGD methods, SAM's two passes, IVON), with the run's precision and
``compile``; evaluation is timed as forward passes per image (IVON: ``1 + test_samples`` passes over the test and
validation splits and its induced-noise subset at each evaluated epoch).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..data import BUNDLED, load_dataset
from ..engine import TrainConfig, build_method, finalize_config, resolve_config
from ..engine.ess_search import planned_cost
from ..engine.evaluation import NOISE_SUBSET
from ..engine.precision import autocast, check_runtime, compile_model, uses_channels_last
from ..errors import InputError
from ..models import build_model

__all__ = ["plan_configs", "plan", "format_plan"]

# (training examples, test examples, input shape, classes) of the datasets read from files
SHAPES: dict[str, tuple[int, int, tuple[int, ...], int]] = {
    "mnist": (60000, 10000, (1, 28, 28), 10),
    "fashion-mnist": (60000, 10000, (1, 28, 28), 10),
    "kmnist": (60000, 10000, (1, 28, 28), 10),
    "cifar10": (50000, 10000, (3, 32, 32), 10),
    "cifar100": (50000, 10000, (3, 32, 32), 100),
}
TIMED_STEPS = 3  # per model and method kind, after two warm-up steps (three with compile); the median


def plan_configs(exp_id: str, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The sweep configurations (``{"name", "tags", "train"}``) that ``varsmooth run exp_id`` would run."""
    from .. import experiments as ex

    module = importlib.import_module(f"varsmooth.experiments.{ex.experiments()[exp_id]}")
    if str(cfg.get("dataset", "")).lower() not in BUNDLED:  # a bundled dataset refuses a data_dir
        cfg = {**cfg, "data_dir": cfg.get("data_dir") or "(not read by --plan)"}
    if hasattr(module, "configs"):
        return module.configs(cfg)
    if exp_id == "noisy-accuracy":
        from ..experiments.comparison import comparison_configs
        from ..experiments.grids import corruptions

        return comparison_configs(cfg, [(c, c, {}) for c in corruptions(cfg)])[0]
    raise InputError(f"--plan does not know the runs of {exp_id!r} yet; it plans noisy-accuracy and the experiments "
                     "with a config list (demo, noise-gallery, smoothed-labels)")  # fmt: skip


def _shape(cfg: TrainConfig) -> tuple[int, int, tuple[int, ...], int]:
    name = cfg.dataset.lower()
    if name in SHAPES:
        return SHAPES[name]
    if name in BUNDLED:
        d = load_dataset(name)
        return len(d.train), len(d.test), tuple(d.input_shape), d.num_classes
    raise InputError(f"--plan does not know the size of dataset {cfg.dataset!r}")


def _kind(method: str) -> str:
    return "ivon" if method.startswith("ivon") else "sam" if method == "sam" else "sgd"


def _epochs_trained(cfg: TrainConfig) -> int:
    """Epochs of training a run costs: ``epochs``, or for ``ess: auto`` the whole search (every candidate)."""
    if not (_kind(cfg.method) == "ivon" and cfg.ess == "auto"):
        return cfg.epochs
    return planned_cost(cfg.schedule_epochs, cfg.epochs, len(set(cfg.ess_grid)))[2]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_step(cfg: TrainConfig, shape, classes: int, n_train: int, device: torch.device) -> tuple[float, float]:
    """Seconds per training step and per evaluated image (one forward pass), on synthetic data."""
    torch.manual_seed(0)
    model = build_model(cfg.model, classes, shape, **cfg.model_options).to(device)
    fmt = torch.channels_last if uses_channels_last(model, device) else torch.contiguous_format
    model = model.to(memory_format=fmt)
    net = compile_model(model) if cfg.compile else model
    method = build_method(cfg.method, net, cfg, num_train=n_train, num_classes=classes)
    x = torch.randn(cfg.batch_size, *shape, device=device)
    x = x.contiguous(memory_format=fmt) if x.dim() == 4 else x
    y = torch.randint(0, classes, (cfg.batch_size,), device=device)
    for _ in range(3 if cfg.compile else 2):  # warm-up (and compilation)
        method.train_step(x, y)
    step = _median_seconds(lambda: method.train_step(x, y), device)
    model.eval()
    with torch.no_grad(), autocast(cfg.precision, device):
        net(x)
        image = _median_seconds(lambda: net(x), device) / cfg.batch_size
    return step, image


def _median_seconds(fn, device: torch.device) -> float:
    times = []
    for _ in range(TIMED_STEPS):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def plan(configs: Sequence[dict], device: torch.device) -> dict[str, Any]:
    """Per run: steps, measured seconds per step, estimated seconds; with the timings per (model, kind)."""
    timings: dict[tuple, tuple[float, float]] = {}
    runs = []
    for c in configs:
        cfg = resolve_config(TrainConfig.from_dict({**c["train"], "progress": False}))
        n_pool, n_test, shape, classes = _shape(cfg)
        n_pool = cfg.train_subset or n_pool
        n_val = int(round(cfg.val_fraction * n_pool)) if cfg.val_fraction > 0 else 0
        n_train = n_pool - n_val
        cfg = finalize_config(cfg, n_train)
        check_runtime(cfg.precision, cfg.compile, device)
        key = (cfg.model, _kind(cfg.method), cfg.batch_size, cfg.precision, cfg.compile, shape, classes,
               json.dumps(cfg.model_options, sort_keys=True), cfg.mc_samples)  # fmt: skip
        if key not in timings:
            numeric = dataclasses.replace(cfg, ess=1.0) if cfg.ess == "auto" else cfg  # a step costs the same
            timings[key] = _time_step(numeric, shape, classes, n_train, device)
        step_s, image_s = timings[key]
        epochs = _epochs_trained(cfg)
        steps = epochs * math.ceil(n_train / cfg.batch_size)
        evals = math.ceil(epochs / cfg.eval_every)
        passes = 1 + (cfg.test_samples if _kind(cfg.method) == "ivon" else 0)
        noise = NOISE_SUBSET if _kind(cfg.method) == "ivon" else 0  # IVON's per-epoch induced-noise subset
        eval_s = evals * passes * (n_test + n_val + noise) * image_s
        runs.append({"name": c["name"], "method": cfg.method, "model": cfg.model, "steps": steps,
                     "step_s": step_s, "seconds": steps * step_s + eval_s, "eval_s": eval_s})  # fmt: skip
    return {"device": str(device), "runs": runs, "timings": timings}


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 360 else f"{seconds / 60:,.1f} min"


def format_plan(p: dict[str, Any], *, exp_id: str, preset: str, gpus_per_run: float | None = None,
                cluster_gpus: int | None = None) -> str:  # fmt: skip
    """The plan as lines for stdout."""
    runs = p["runs"]
    total = sum(r["seconds"] for r in runs)
    steps = sum(r["steps"] for r in runs)
    lines = [f"plan: varsmooth run {exp_id} --preset {preset} (nothing trained, nothing written)",
             f"runs: {len(runs)}; steps per run: {min(r['steps'] for r in runs):,}"
             + (f" to {max(r['steps'] for r in runs):,}" if len({r['steps'] for r in runs}) > 1 else "")
             + f"; steps in all: {steps:,}",
             f"time per step on {p['device']} (median of {TIMED_STEPS} steps on synthetic batches):"]  # fmt: skip
    for (model, kind, batch, precision, compiled, *_), (step_s, image_s) in p["timings"].items():
        lines.append(f"  {model:<9} {kind:<4} batch {batch:<4} {precision}{' compiled' if compiled else ''}: "
                     f"{step_s * 1000:,.1f} ms/step, evaluation {image_s * 1e6:,.1f} us/image")  # fmt: skip
    by_method: dict[str, list[dict]] = {}
    for r in runs:
        by_method.setdefault(r["method"], []).append(r)
    evaluation = sum(r["eval_s"] for r in runs)
    lines.append(f"device-hours on {p['device']}: {_hours(total)} in all (of which evaluation {_hours(evaluation)}); "
                 "per run:")  # fmt: skip
    for method, rs in by_method.items():
        lines.append(f"  {method:<5} {len(rs):>4} runs x {_hours(rs[0]['seconds'])}")
    if cluster_gpus is not None:
        per_run = gpus_per_run or 1.0
        slots = max(1, int(cluster_gpus // per_run)) if per_run <= cluster_gpus else 0
        if slots == 0:
            raise InputError(f"--gpus-per-run {per_run:g} is more than the cluster's {cluster_gpus} GPUs")
        wall = max(total / slots, max(r["seconds"] for r in runs))
        lines.append(f"on a cluster of {cluster_gpus} GPUs at {per_run:g} per run ({slots} runs at once): "
                     f"about {_hours(wall)} of wall time (runs at this device's speed)")  # fmt: skip
    return "\n".join(lines)
