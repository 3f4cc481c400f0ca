"""Experiments: one module per paper figure, each a thin configuration over the library.

An experiment module in this package defines ``ID`` (e.g. ``"noise-curve"``), ``DESCRIPTION`` (one line, naming the
paper figure) and ``run(cfg: dict, out: Path) -> dict``: it reads its
resolved config, writes ``results.csv`` (tidy) and PNG plots into ``out`` and returns the summary that
:func:`run_experiment` writes to ``summary.json``. Presets (``smoke``, ``cpu``, ``paper``) live in
``varsmooth/configs/<id>.yaml`` as ``{presets: {name: {key: value}}}``; ``--set key=value`` overrides one key of the
chosen preset and an unknown key is an error. Values are read by one YAML loader (:func:`load_yaml`: safe, and
``1e6`` is a number, as in YAML 1.2); ``seeds`` must be distinct integers and every number finite. A rejected run
changes nothing in its output folder: :func:`run_experiment` puts the folder's ``config.json`` back and removes the
folders it made.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError, os_errors
from ..io import atomic_write, check_folder, versions, write_json
from ..lock import hold
from .sweep import lock_name

MAX_YAML_DEPTH = 32  # nesting of lists and mappings: the presets use 3


class _Loader(yaml.SafeLoader):
    """yaml.safe_load with YAML 1.2 floats (``1e6``, ``1E-3`` and ``.5e2`` are numbers, not strings), no aliases
    (``*name``: an alias loop or an exponential expansion is refused, not built), at most
    :data:`MAX_YAML_DEPTH` levels of nesting, and no key given twice in one mapping."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"the alias *{event.anchor} is not allowed (no anchors or "
                                              "aliases)", event.start_mark)  # fmt: skip
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        key_node.start_mark)  # fmt: skip
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text safely (no tags that build objects, no aliases, bounded nesting, no duplicate keys), reading
    ``1e6`` as the number 1,000,000. A ``yaml.YAMLError`` (its ``problem`` says what) otherwise."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except RecursionError:  # nesting the scanner or parser recurses on before the depth check sees it
        raise yaml.YAMLError(f"nested deeper than {MAX_YAML_DEPTH} levels") from None


@dataclass(frozen=True)
class Runtime:
    """How to run, not what: never changes results. Passed to ``run(cfg, out, runtime)`` when it takes it."""

    jobs: int = 1  # independent runs of a sweep in parallel processes
    shard: tuple[int, int] = (0, 1)  # run only configurations k with k % n == i
    progress: bool = True
    retry_failed: bool = False  # run a sweep's recorded failures again (else they are skipped)
    executor: str = "local"  # "local": --jobs processes here; "ray": a Ray task per run (the cluster RAY_ADDRESS names)
    gpus_per_run: float = 0.0  # Ray: GPUs given to each run (0.5: two runs share a card)
    cpus_per_run: int = 1  # Ray: CPUs given to each run (its torch threads)


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

DEFAULT_EXPERIMENT = "demo"  # what `varsmooth run` runs with no experiment named; `varsmooth list` shows it first
# The paper's order; experiments not named here are listed after these.
_ORDER = ["noise-curve", "moons", "theorems", "noise-gallery", "smoothed-labels", "noisy-accuracy",
          "fixed-hessian", "class-dependent", "hessian-init", "natural-noise"]


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, tuple[str, str]]:
    """``{id: (module name, description)}`` of every experiment module in this package, in the paper's order, read
    from the source with ``ast`` (a module-level ``ID``, ``DESCRIPTION`` and ``def run``): listing the experiments
    imports none of them, nor torch."""
    found = {}
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        consts = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                  if isinstance(t, ast.Name) and t.id in ("ID", "DESCRIPTION")}  # fmt: skip
        runs = any(isinstance(n, ast.FunctionDef) and n.name == "run" for n in tree.body)
        if "ID" in consts and runs:
            found[ast.literal_eval(consts["ID"])] = (path.stem, ast.literal_eval(consts.get("DESCRIPTION", "''")))
    rank = {k: i for i, k in enumerate(_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def experiments() -> dict[str, str]:
    """``{id: module name}`` of every experiment module in this package, in the paper's order (nothing imported)."""
    return {k: module for k, (module, _) in _registry().items()}


def _check_id(exp_id: str) -> str:
    table = _registry()
    if exp_id not in table:
        raise InputError(f"unknown experiment {exp_id!r}; choose one of: {', '.join(table)}")
    return table[exp_id][0]


def _module(exp_id: str):
    return importlib.import_module(f".{_check_id(exp_id)}", __name__)


def presets(exp_id: str) -> dict[str, dict[str, Any]]:
    """The presets of an experiment, ``{name: config}``."""
    _check_id(exp_id)
    path = CONFIG_DIR / f"{exp_id}.yaml"
    return load_yaml(path.read_text(encoding="utf-8"))["presets"]


def describe(exp_id: str) -> str:
    """The experiment's one-line ``DESCRIPTION`` (the paper figure it reproduces), read without importing it."""
    _check_id(exp_id)
    return _registry()[exp_id][1]


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)`` with the value parsed as YAML (numbers, lists, booleans)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InputError(f"--set expects key=value, got {text!r}")
    try:
        return key.strip(), load_yaml(value)
    except yaml.YAMLError as err:
        why = getattr(err, "problem", None) or (str(err) if type(err) is yaml.YAMLError else "")
        why = f": {why}" if why else ""
        raise InputError(f"--set {key}: cannot parse value {value[:80]!r}{why}") from None


def resolve_preset(exp_id: str, preset: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The preset's config with ``overrides`` applied; unknown presets and keys are errors."""
    table = presets(exp_id)
    if preset not in table:
        raise InputError(f"unknown preset {preset!r} for {exp_id}; choose one of: {', '.join(table)}")
    cfg = dict(table[preset])
    for key, value in (overrides or {}).items():
        if key not in cfg:
            raise InputError(f"unknown config key {key!r} for {exp_id}; allowed: {', '.join(sorted(cfg))}")
        _check_finite(key, value)
        _check_type(key, value, [p[key] for p in table.values() if key in p])
        cfg[key] = value
    if "seeds" in cfg:
        seeds = cfg["seeds"]
        ok = isinstance(seeds, list) and seeds and all(_seed_ok(x) for x in seeds)
        if not ok:
            raise InputError(f"seeds={seeds!r} is not allowed; give a non-empty list of integers in [0, 2**31 - 1]")
        if len(set(seeds)) != len(seeds):
            twice = sorted({x for x in seeds if seeds.count(x) > 1})
            raise InputError(f"seeds={seeds!r} names seed(s) {', '.join(map(str, twice))} twice; give distinct seeds")
    for key, value in _seeds(cfg):
        if not _seed_ok(value):
            raise InputError(f"{key}={value!r} is not allowed; give an integer in [0, 2**31 - 1]")
    return cfg


def _seeds(cfg: dict[str, Any], prefix: str = ""):
    """``(dotted key, value)`` of every ``seed`` / ``*_seed`` key, in nested mappings too (``train.seed``)."""
    for k, v in cfg.items():
        if isinstance(v, dict):
            yield from _seeds(v, f"{prefix}{k}.")
        elif k == "seed" or str(k).endswith("_seed"):
            yield f"{prefix}{k}", v


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
          dict: "a mapping"}  # fmt: skip


# keys that presets may leave null everywhere, and what they hold when set
_NULL_KEYS: dict[str, tuple[type, ...]] = {"data_dir": (str,), "noisy_labels": (str,), "noisy_labels_key": (str,),
                                           "test_subset": (int,), "train_subset": (int,), "pair_class": (int,),
                                           "classes": (int, list), "threads": (int,)}  # fmt: skip


def _kind(value: Any) -> type | None:
    return next((t for t in _KINDS if isinstance(value, t)), None)


def _check_type(key: str, value: Any, examples: list[Any]) -> None:
    """InputError unless ``value`` has the kind the presets give ``key`` (an integer where they have integers, a
    number where they have numbers, ...). A key some preset leaves unset (null) may also be null; a key that is
    null in every preset may be anything."""
    kinds = {_kind(v) for v in examples if v is not None} or set(_NULL_KEYS.get(key, ()))
    nullable = any(v is None for v in examples)
    if not kinds or None in kinds or (value is None and nullable):
        return
    kind = _kind(value)
    if kind in kinds or (kind is int and float in kinds):
        return
    allowed = " or ".join(_KINDS[k] for k in sorted(kinds, key=list(_KINDS).index))
    if nullable:
        allowed += " or null"
    raise InputError(f"--set {key}={value!r} is not allowed; it must be {allowed}")


def _seed_ok(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 2**31 - 1


def _check_finite(key: str, value: Any) -> None:
    """InputError when ``value`` holds a NaN or infinite number anywhere (lists and mappings included)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"--set {key}: {value} is not allowed; every number must be finite")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(f"{key}.{k}", v)
    elif isinstance(value, list):
        for v in value:
            _check_finite(key, v)


def run_experiment(
    exp_id: str, cfg: dict[str, Any], out: str | Path, *, preset: str = "custom", runtime: Runtime | None = None
) -> dict:
    """Run one experiment into ``out``: writes ``config.json``, the module's files and ``summary.json``.

    Holds ``out``'s lock (:mod:`varsmooth.lock`; one per shard) throughout: InputError naming the holder when
    another process has it. A sweep's failed runs are in the summary (``runs_failed``, ``failures``)."""
    module = _module(exp_id)
    runtime = runtime or Runtime()
    _check_keys(exp_id, cfg)
    with os_errors():  # a full disk, a read-only folder: one InputError naming the file
        out = check_folder(out)
        fresh = not out.exists()
        # the folder's lock (varsmooth.lock; one per shard) for the whole experiment, taken before looking inside
        with hold(out, what="results folder", name=lock_name(runtime.shard), clean=runtime.shard[1] == 1):
            before = None if fresh else _folders(out)
            old_config = None if fresh or not (out / "config.json").is_file() else (out / "config.json").read_bytes()
            try:
                summary = _run(module, exp_id, cfg, out, preset, runtime)
            except InputError:  # bad input found inside the experiment: change nothing
                if fresh:
                    shutil.rmtree(out, ignore_errors=True)
                else:
                    _undo(out, before, old_config)
                raise
            except BaseException:  # a full disk, a failed run, an interrupt: what finished stays, empty folders go
                _remove_new_empty(out, before or set())
                raise
    return summary


def _check_keys(exp_id: str, cfg: Any) -> None:
    """InputError unless ``cfg`` is a mapping with every key all presets share and only keys some preset has."""
    if not isinstance(cfg, dict):
        raise InputError(f"the config of {exp_id} must be a mapping, got {type(cfg).__name__}")
    table = presets(exp_id)
    known = set().union(*(set(p) for p in table.values()))
    required = set.intersection(*(set(p) for p in table.values()))
    unknown, missing = sorted(set(cfg) - known), sorted(required - set(cfg))
    if unknown or missing:
        what = "; ".join(x for x in (unknown and f"unknown key(s) {', '.join(unknown)}",
                                     missing and f"missing key(s) {', '.join(missing)}") if x)  # fmt: skip
        raise InputError(f"config of {exp_id}: {what}; start from resolve_preset({exp_id!r}, PRESET)")


def _run(module, exp_id: str, cfg: dict[str, Any], out: Path, preset: str, runtime: Runtime) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    # description and order: what the report (varsmooth.report, which imports no experiment) shows and sorts by
    order = list(experiments()).index(exp_id)
    write_json(out / "config.json", {"experiment": exp_id, "preset": preset, "description": module.DESCRIPTION,
                                     "order": order, "config": cfg, "versions": versions()})  # fmt: skip
    start = time.perf_counter()
    if "runtime" in inspect.signature(module.run).parameters:
        summary = module.run(cfg, out, runtime=runtime)
    else:
        summary = module.run(cfg, out)
    summary = {"experiment": exp_id, "preset": preset, **summary,
               "wall_time_s": round(time.perf_counter() - start, 3)}
    write_json(out / "summary.json", summary)
    return summary


def _folders(out: Path) -> set[str]:
    """Every folder under ``out`` (relative paths)."""
    return {os.path.relpath(root, out) for root, _, _ in os.walk(out)}


def _remove_new_empty(out: Path, before: set[str]) -> None:
    """Remove the folders under ``out`` (``out`` too) that were not in ``before`` and are empty, deepest first."""
    if not out.is_dir():
        return
    for rel in sorted(_folders(out) - before, key=lambda r: (_depth(r), r), reverse=True):
        try:
            (out / rel).rmdir()
        except OSError:
            continue


def _depth(rel: str) -> int:
    return 0 if rel == "." else 1 + rel.count(os.sep)


def _undo(out: Path, before: set[str], old_config: bytes | None) -> None:
    """After a rejected run on an existing folder: its config.json as it was, no new empty folders."""
    try:
        if old_config is None:
            (out / "config.json").unlink(missing_ok=True)
        elif (out / "config.json").read_bytes() != old_config:
            atomic_write(out / "config.json", old_config)
    except OSError:
        pass
    _remove_new_empty(out, before)
