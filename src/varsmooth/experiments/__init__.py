"""Experiments: one module per paper figure, each a thin configuration over the library.

An experiment module in this package defines ``ID`` (e.g. ``"noise-curve"``), ``DESCRIPTION`` (one line, naming the
paper figure) and ``run(cfg: dict, out: Path) -> dict``: it reads its
resolved config, writes ``results.csv`` (tidy) and PNG plots into ``out`` and returns the summary that
:func:`run_experiment` writes to ``summary.json``. Presets (``smoke``, ``cpu``, ``paper``) live in
``varsmooth/configs/<id>.yaml`` as ``{presets: {name: {key: value}}}``; ``--set key=value`` overrides one key of the
chosen preset and an unknown key is an error.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError
from ..io import versions, write_json
from ..lock import hold
from .sweep import lock_name


@dataclass(frozen=True)
class Runtime:
    """How to run, not what: never changes results. Passed to ``run(cfg, out, runtime)`` when it takes it."""

    jobs: int = 1  # independent runs of a sweep in parallel processes
    shard: tuple[int, int] = (0, 1)  # run only configurations k with k % n == i
    progress: bool = True
    retry_failed: bool = False  # run a sweep's recorded failures again (else they are skipped)


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

# The paper's order; experiments not named here are listed after these.
_ORDER = ["noise-curve", "moons", "theorems", "noise-gallery", "smoothed-labels", "noisy-accuracy",
          "fixed-hessian", "class-dependent", "hessian-init", "natural-noise"]


def experiments() -> dict[str, str]:
    """``{id: module name}`` of every experiment module in this package, in the paper's order."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f".{info.name}", __name__)
        if hasattr(module, "ID") and hasattr(module, "run"):
            found[module.ID] = info.name
    rank = {k: i for i, k in enumerate(_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def _module(exp_id: str):
    table = experiments()
    if exp_id not in table:
        raise InputError(f"unknown experiment {exp_id!r}; choose one of: {', '.join(table)}")
    return importlib.import_module(f".{table[exp_id]}", __name__)


def presets(exp_id: str) -> dict[str, dict[str, Any]]:
    """The presets of an experiment, ``{name: config}``."""
    _module(exp_id)
    path = CONFIG_DIR / f"{exp_id}.yaml"
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)["presets"]


def describe(exp_id: str) -> str:
    return _module(exp_id).DESCRIPTION


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)`` with the value parsed as YAML (numbers, lists, booleans)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InputError(f"--set expects key=value, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise InputError(f"--set {key}: cannot parse value {value!r}") from None


def resolve_preset(exp_id: str, preset: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The preset's config with ``overrides`` applied; unknown presets and keys are errors."""
    table = presets(exp_id)
    if preset not in table:
        raise InputError(f"unknown preset {preset!r} for {exp_id}; choose one of: {', '.join(table)}")
    cfg = dict(table[preset])
    for key, value in (overrides or {}).items():
        if key not in cfg:
            raise InputError(f"unknown config key {key!r} for {exp_id}; allowed: {', '.join(sorted(cfg))}")
        cfg[key] = value
    return cfg


def run_experiment(
    exp_id: str, cfg: dict[str, Any], out: str | Path, *, preset: str = "custom", runtime: Runtime | None = None
) -> dict:
    """Run one experiment into ``out``: writes ``config.json``, the module's files and ``summary.json``.

    Holds ``out``'s lock (:mod:`varsmooth.lock`; one per shard) throughout: InputError naming the holder when
    another process has it. A sweep's failed runs are in the summary (``runs_failed``, ``failures``)."""
    _module(exp_id)
    runtime = runtime or Runtime()
    fresh = not Path(out).exists()
    with hold(out, what="results folder", name=lock_name(runtime.shard), clean=runtime.shard[1] == 1):
        return _run_experiment(exp_id, cfg, Path(out), preset=preset, runtime=runtime, fresh=fresh)


def _run_experiment(
    exp_id: str, cfg: dict[str, Any], out: Path, *, preset: str, runtime: Runtime, fresh: bool
) -> dict:
    module = _module(exp_id)
    out.mkdir(parents=True, exist_ok=True)
    # description and order: what the report (varsmooth.report, which imports no experiment) shows and sorts by
    order = list(experiments()).index(exp_id)
    write_json(out / "config.json", {"experiment": exp_id, "preset": preset, "description": module.DESCRIPTION,
                                     "order": order, "config": cfg, "versions": versions()})  # fmt: skip
    start = time.perf_counter()
    try:
        if "runtime" in inspect.signature(module.run).parameters:
            summary = module.run(cfg, out, runtime=runtime)
        else:
            summary = module.run(cfg, out)
    except InputError:
        if fresh:  # bad input found inside the experiment: leave nothing behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    summary = {"experiment": exp_id, "preset": preset, **summary,
               "wall_time_s": round(time.perf_counter() - start, 3)}
    write_json(out / "summary.json", summary)
    return summary
