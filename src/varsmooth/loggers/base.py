"""What every run logger shares: the logger names and the extras that install them, the per-epoch scalars of a
``metrics.jsonl`` record and their tags, the flattened config, where a run folder sits (:class:`RunContext`) and
the :class:`Backend` interface that :mod:`.tensorboard` and :mod:`.mlflow` implement."""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import read_json

# name -> (the module it needs, the extra that installs it)
LOGGERS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}
SEARCH_DIR = "ess-search"  # varsmooth.engine.ess_search.SEARCH_DIR (not imported: the engine imports this package)
FIGURES = "figures"
DPI = 80  # the figures are for a dashboard: smaller is faster to draw (the report's figures use plots.DPI)


def check_loggers(names: Any) -> list[str]:
    """``names`` as a list of distinct logger names; InputError for an unknown name, or one whose package is not
    installed (naming the extra that installs it)."""
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise InputError(f"loggers={names!r} is not allowed; give a list of names ({', '.join(LOGGERS)})")
    for name in names:
        if name not in LOGGERS:
            raise InputError(f"unknown logger {name!r}; allowed: {', '.join(LOGGERS)}")
        module, extra = LOGGERS[name]
        if importlib.util.find_spec(module) is None:
            raise InputError(f"--log {name} needs the {module} package: pip install 'varsmooth[{extra}]'")
    return list(dict.fromkeys(names))


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a metrics record (``epoch`` is the step, not a value; bools, strings and lists are left out)."""
    return {k: float(v) for k, v in record.items()
            if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool)}  # fmt: skip


# metric-name prefixes -> the section a dashboard groups them in
_SECTIONS = (
    (("sigma_", "h_ratio_", "hess_init_weight", "ess", "beta2"), "ivon"),
    (("train_noise_", "test_noise_"), "label_noise"),
    (("train_",), "train"),
    (("val_",), "val"),
    (("test_",), "test"),
    (("final/",), ""),
    (("ess_search/",), ""),
)


def tag_of(key: str) -> str:
    """The TensorBoard tag of a metric: its section and its ``metrics.jsonl`` name, e.g. ``ivon/sigma_median``,
    ``label_noise/train_noise_l1_noisy``, ``test/test_acc``, ``run/lr``."""
    for prefixes, section in _SECTIONS:
        if key.startswith(prefixes):
            return f"{section}/{key}" if section else key
    return f"run/{key}"


def flat_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config as ``{dotted.key: bool | int | float | str}`` (mappings flattened; lists and None as JSON text)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, Mapping) and v:
            out.update(flat_config(v, f"{prefix}{k}."))
        elif isinstance(v, bool | int | float | str) and not (isinstance(v, float) and not math.isfinite(v)):
            out[prefix + k] = v
        else:
            out[prefix + k] = json.dumps(v, default=str)
    return out


@dataclass
class RunContext:
    """Where and as what a run folder is logged (the folder layout decides it; nothing is configured)."""

    folder: Path  # the run folder
    name: str  # the run's name: NAME in a sweep, the folder's name otherwise
    root: Path  # where local stores go: the sweep folder, or the run folder itself
    experiment: str  # the MLflow experiment: the sweep folder's name, or "varsmooth"
    config: dict[str, Any]  # the resolved config, flattened
    tags: dict[str, str] = field(default_factory=dict)  # corruption, method, seed (+ ess_factor for a candidate)
    parent: RunContext | None = None  # an ess-search candidate's run

    @classmethod
    def of(cls, folder: Path, config: Mapping[str, Any]) -> RunContext:
        folder = folder.resolve()
        tags = {k: str(config.get(k)) for k in ("corruption", "method", "seed")}
        if folder.parent.name == SEARCH_DIR:  # RUN/ess-search/fF: a candidate of RUN's search
            parent = cls.of(folder.parent.parent, config)
            tags["ess_factor"] = str(config.get("ess_factor"))
            return cls(folder, f"{parent.name}/{SEARCH_DIR}/{folder.name}", parent.root, parent.experiment,
                       flat_config(config), {**parent.tags, **tags}, parent)  # fmt: skip
        sweep = folder.parent.parent
        if folder.parent.name == "runs" and _is_experiment(sweep / "config.json"):  # OUT/runs/NAME
            return cls(folder, folder.name, sweep, sweep.name, flat_config(config), tags)
        return cls(folder, folder.name, folder, "varsmooth", flat_config(config), tags)


def _is_experiment(path: Path) -> bool:
    try:
        return path.is_file() and "experiment" in read_json(path)
    except (OSError, ValueError):
        return False


class Backend:
    """One place training curves go. The engine calls, in order: :meth:`open` (once per process, before the first
    epoch it logs), :meth:`log_epochs` (the records of epochs; after a resume the run's whole history again: a
    backend must not duplicate steps), :meth:`log_final` (once, after the run), :meth:`close`."""

    after_checkpoint = False  # True: given an epoch only once its checkpoint is written (see RunLogger)

    def open(self, ctx: RunContext) -> None:
        raise NotImplementedError

    def log_epochs(self, records: Sequence[Mapping[str, Any]]) -> None:
        raise NotImplementedError

    def log_final(self, values: Mapping[str, Sequence[tuple[int, float]]], files: Sequence[Path]) -> None:
        """``values``: ``{name: [(step, value), ...]}`` -- ``final/<key>`` (at the last epoch) and
        ``ess_search/f<factor>/<score>`` (at each rung's epoch); ``files``: the figures (PNG) and ``final.json``."""
        raise NotImplementedError

    def close(self, status: str) -> None:
        """``status``: FINISHED, FAILED or KILLED."""
        raise NotImplementedError
