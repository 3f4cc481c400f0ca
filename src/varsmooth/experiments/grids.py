"""Presets into runs: the grids of a preset, its data checks, and the typed run spec of every run it makes.

A comparison preset (``varsmooth/configs/<id>.yaml``) names a dataset, seeds and grids of hyperparameters
(``alphas``, ``rhos``, ``ess_factors``, ``hess_inits``, ...). This module checks them (:func:`require_data`,
:func:`grid`, :func:`ess_grid`, :func:`corruptions`; InputError naming the key) and turns one point of a grid into a
:class:`RunSpec`: the run's name, its tags (the columns it contributes to ``results.csv``) and its
:class:`~varsmooth.engine.TrainConfig`. :meth:`RunSpec.sweep_config` is the plain dict the resumable sweep
(:func:`.sweep.run_sweep`) records in each run's ``result.json``; :func:`run_config` returns it directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..data.corruption import parse_corruption
from ..engine import METHODS, TrainConfig, resolve_config
from ..errors import InputError
from .common import load_cached

# Every run has all these tag columns (empty where they do not apply), so results.csv has the same columns always.
TAGS = ("method", "corruption", "alpha", "rho", "ess_factor", "h0", "seed")
# Keys of a preset that become TrainConfig fields of every run.
TRAIN_KEYS = ("dataset", "data_dir", "model", "model_options", "train_subset", "val_fraction", "epochs", "batch_size")
AUTO = "auto"


@dataclass(frozen=True)
class RunSpec:
    """One run of an experiment: ``name`` (its folder under ``runs/``), ``tags`` (its ``results.csv`` columns),
    ``train`` (what the engine runs), ``given`` (the TrainConfig fields the preset sets, in order: the sweep records
    only these, the rest are TrainConfig's defaults) and ``options`` (other sweep keys, e.g. ``test_subset``)."""

    name: str
    tags: dict[str, Any]
    train: TrainConfig
    given: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_sweep(cls, cfg: dict[str, Any]) -> RunSpec:
        """The spec of a sweep configuration ``{"name", "tags", "train": {field: value}, ...}``; InputError for an
        unknown training option."""
        rest = {k: v for k, v in cfg.items() if k not in ("name", "tags", "train")}
        return cls(cfg["name"], dict(cfg.get("tags") or {}), TrainConfig.from_dict(cfg["train"]), tuple(cfg["train"]),
                   rest)  # fmt: skip

    def sweep_config(self) -> dict[str, Any]:
        """The sweep's plain dict of this run (what ``result.json`` records and a re-run compares)."""
        train = {k: getattr(self.train, k) for k in self.given}
        return {"name": self.name, "tags": dict(self.tags), "train": train, **self.options}


def require_data(cfg: dict[str, Any]) -> None:
    """Raise InputError when the preset's dataset needs files and no ``data_dir`` was given."""
    from ..data import BUNDLED, DATASETS

    name = str(cfg.get("dataset", "")).lower()
    if name not in DATASETS:
        raise InputError(f"unknown dataset {cfg.get('dataset')!r}; allowed: {', '.join(DATASETS)}")
    if name not in BUNDLED and not cfg.get("data_dir"):
        raise InputError(
            f"dataset {name!r} is read from files: pass --data-dir DIR (the folder with its files), "
            "or use --preset smoke (bundled data)"
        )
    seeds = cfg.get("seeds", [cfg["seed"]] if "seed" in cfg else None)  # a list, or one ``seed``
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise InputError(f"seeds={seeds!r} is not allowed; give a non-empty list of integers (e.g. --seeds 0 1 2)")


def corruptions(cfg: dict) -> list[str]:
    """The preset's ``corruptions`` list, each parsed (InputError for a bad one)."""
    values = cfg.get("corruptions")
    if not isinstance(values, list) or not values:
        raise InputError(f"corruptions={values!r} is not allowed; give a list such as [symmetric:0.2, pairflip:0.2]")
    for v in values:
        parse_corruption(str(v))
    return [str(v) for v in values]


def _numbers(key: str, values: Any, *, positive: bool = False, upper: float | None = None) -> list[float]:
    if not isinstance(values, list) or not values:
        raise InputError(f"{key}={values!r} is not allowed; give a non-empty list of numbers")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise InputError(f"{key}: {v!r} is not allowed; values must be numbers >= 0")
        if positive and v <= 0 or upper is not None and v > upper:
            raise InputError(
                f"{key}: {v!r} is not allowed; values must be in {'(0' if positive else '[0'}, "
                f"{upper if upper is not None else 'inf'}]"
            )
        out.append(float(v))
    return out


def _setting_values(cfg: dict, key: str, corruption: str | None) -> Any:
    """``cfg[key]``, or the list under ``corruption_options[corruption][key]`` when that setting overrides it."""
    per_corruption = (cfg.get("corruption_options") or {}).get(corruption, {}) if corruption is not None else {}
    return per_corruption.get(key, cfg.get(key))


def grid(cfg: dict, key: str, corruption: str | None = None, **bounds) -> list[float]:
    """The list of numbers ``cfg[key]``, checked (InputError naming the key otherwise); a list under
    ``corruption_options[corruption][key]`` replaces it for that setting (e.g. the paper's per-setting h0, Table 1)."""
    return _numbers(key, _setting_values(cfg, key, corruption), **bounds)


def fmt_factor(value: Any) -> str:
    """An ess factor as text: ``"x0.25"``, or ``"auto"``."""
    return AUTO if value == AUTO else f"x{float(value):g}"


def ess_grid(cfg: dict, corruption: str | None = None) -> list[float | str]:
    """``ess_factors``: positive factors of N, and ``"auto"`` (ess chosen by the engine on the validation split,
    :mod:`varsmooth.engine.ess_search`; needs ``val_fraction > 0``)."""
    values = _setting_values(cfg, "ess_factors", corruption)
    if not isinstance(values, list) or not values:
        raise InputError(f"ess_factors={values!r} is not allowed; give a non-empty list of numbers or 'auto'")
    numbers = _numbers("ess_factors", [v for v in values if v != AUTO] or [1.0], positive=True)
    if AUTO in values and not float(cfg.get("val_fraction") or 0) > 0:
        raise InputError("ess_factors: 'auto' chooses ess on a validation split; set val_fraction > 0")
    it = iter(numbers)
    return [AUTO if v == AUTO else next(it) for v in values]


def _check_options(cfg: dict[str, Any]) -> None:
    """``method_options``: {method or family (ivon, sgd): {TrainConfig field: value}}; ``corruption_options``:
    {corruption: {...}}; ``train``: {TrainConfig field: value}. InputError naming the bad entry otherwise."""
    names = ("ivon", "sgd", *METHODS)
    options = cfg.get("method_options") or {}
    if isinstance(options, dict):
        bad = [k for k, v in options.items() if k not in names or not isinstance(v, dict)]
    else:
        bad = [options]
    if bad:
        raise InputError(f"method_options: {bad[0]!r} is not allowed; use {{method: {{option: value}}}} with a "
                         f"method of {', '.join(names)}")  # fmt: skip
    for key in ("corruption_options", "train"):
        value = cfg.get(key) or {}
        if not isinstance(value, dict) or (key == "corruption_options" and
                                           not all(isinstance(v, dict) for v in value.values())):  # fmt: skip
            raise InputError(f"{key}={value!r} is not allowed; it must be a mapping")
    # the sweep sets each run's method and seed itself: a value given here would be replaced without a word
    blocks = [("train", cfg.get("train") or {})]
    blocks += [(f"method_options.{m}", v) for m, v in options.items()]
    blocks += [(f"corruption_options.{c}.{m}", v) for c, per in (cfg.get("corruption_options") or {}).items()
               for m, v in per.items() if isinstance(v, dict)]  # fmt: skip
    for where, block in blocks:
        for fixed, instead in (("seed", "--seeds"), ("method", "the preset's methods")):
            if fixed in block:
                raise InputError(f"{where}.{fixed} is not allowed: the sweep sets each run's {fixed}; use {instead}")


def train_config(cfg: dict[str, Any], method: str, corruption: str, seed: int, **options: Any) -> dict[str, Any]:
    """The TrainConfig dict of one run: the preset's common keys, ``train`` (all methods), ``method_options[m]``,
    ``corruption_options[corruption]["all" | m]`` (per-setting values such as the paper's Table 1), then ``options``."""
    base = {k: cfg[k] for k in TRAIN_KEYS if k in cfg}
    _check_options(cfg)
    per_corruption = (cfg.get("corruption_options") or {}).get(corruption, {})
    family = "ivon" if method.startswith("ivon") else "sgd"
    per_corruption = {k: v for k, v in per_corruption.items() if isinstance(v, dict)}  # lists: grids (see grid)
    merged = {
        **base,
        **(cfg.get("train") or {}),
        **(cfg.get("method_options") or {}).get(family, {}),
        **(cfg.get("method_options") or {}).get(method, {}),
        **per_corruption.get("all", {}),
        **per_corruption.get(family, {}),
        **per_corruption.get(method, {}),
        "method": method,
        "seed": int(seed),
        **options,
    }
    if "noisy_labels" not in merged or merged["noisy_labels"] is None:
        merged.setdefault("corruption", corruption)
    return merged


def fmt(v: Any) -> str:
    """A hyperparameter value as text: floats by ``:g``, everything else by ``str``."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def run_spec(
    cfg: dict[str, Any], method: str, corruption: str, seed: int, *, extra_tags: dict | None = None, **hp: Any
) -> RunSpec:
    """The :class:`RunSpec` of one run of a preset. ``hp``: alpha, rho, ess_factor (``"auto"``: ess chosen by the
    engine), h0 (-> hess_init)."""
    tags = dict.fromkeys(TAGS, "")
    tags.update(method=method, corruption=corruption, seed=int(seed), **(extra_tags or {}))
    options = {}
    for key, value in hp.items():
        tags[key] = value
        if key == "ess_factor" and value == AUTO:
            options["ess"] = AUTO  # nothing given: the engine chooses ess
        else:
            options["hess_init" if key == "h0" else key] = value
    name = "_".join(
        [corruption.replace(":", "-"), method]
        + [f"{k}{fmt(v)}" for k, v in (extra_tags or {}).items()]
        + [f"{k}{fmt(v)}" for k, v in hp.items()]
        + [f"s{seed}"]
    )
    train = train_config(cfg, method, corruption, seed, **options)
    return RunSpec(name, tags, TrainConfig.from_dict(train), tuple(train))


def run_config(
    cfg: dict[str, Any], method: str, corruption: str, seed: int, *, extra_tags: dict | None = None, **hp: Any
) -> dict[str, Any]:
    """:func:`run_spec` as the sweep's plain dict ``{"name", "tags", "train"}``."""
    return run_spec(cfg, method, corruption, seed, extra_tags=extra_tags, **hp).sweep_config()


def check_configs(configs: Sequence[dict | RunSpec]) -> None:
    """Resolve every run's TrainConfig and build each distinct corruption model for its dataset before anything runs,
    so a bad key or an invalid corruption (e.g. a class-dependent row outside [0, 1]) fails at once with InputError."""
    from ..data.corruption import transition_matrix

    seen = set()
    for c in configs:
        spec = c if isinstance(c, RunSpec) else RunSpec.from_sweep(c)
        t = resolve_config(spec.train)
        key = (t.dataset, t.data_dir, repr(sorted(t.data_options.items())), t.corruption)
        if key not in seen and parse_corruption(t.corruption).kind.value != "none":
            seen.add(key)
            transition_matrix(parse_corruption(t.corruption), load_cached(spec.sweep_config()["train"]).num_classes)
