"""The checkpoint of a training run (``checkpoint.pt``): its schema (:class:`Checkpoint`), and :func:`restore`.

One plain dict of tensors and plain values on disk, written atomically with :func:`varsmooth.io.torch_save` and
read with ``torch.load(weights_only=True)`` (no pickled code). It holds everything needed to continue bitwise as if
never stopped; the same :func:`load` and :func:`restore` serve resuming (:func:`varsmooth.engine.train`) and the
detector (:func:`varsmooth.detect.score_checkpoint`, ``varsmooth suspects``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError, os_error_message
from ..io import torch_save
from .methods import Method

FORMAT = 1


@dataclass
class Checkpoint:
    """The fields of ``checkpoint.pt``; :meth:`to_dict` is what is saved."""

    config: dict[str, Any]  # TrainConfig.to_dict() of the resolved run (numeric ess and beta2)
    epoch: int  # epochs finished
    model: dict[str, torch.Tensor]  # model.state_dict()
    method: dict[str, Any]  # Method.state_dict() (optimizer state, OLS matrix) plus "base_lrs"
    rng: list[dict[str, Any]] = field(default_factory=list)  # per data-parallel rank: rng_state()
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl up to this epoch
    data_order: torch.Tensor | None = None  # the last epoch's permutation of the training positions
    schedule: dict[str, Any] = field(default_factory=dict)  # epoch, steps_per_epoch, lr_factor at the save
    labels: str | None = None  # labels_fingerprint() of the labels trained on and the pool
    callbacks: list[Any] = field(default_factory=list)  # state_dict() of each callback that has one, else None
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Checkpoint:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def save(path: str | Path, ckpt: Checkpoint) -> None:
    torch_save(ckpt.to_dict(), path)


def load(path: str | os.PathLike) -> Checkpoint:
    """The checkpoint of a run folder (its ``checkpoint.pt``) or the file itself; InputError when unreadable."""
    path = Path(path)
    file = path / "checkpoint.pt" if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"no checkpoint at {path}: give a run folder holding checkpoint.pt, or the file")
    try:
        f = open(file, "rb")  # noqa: SIM115 - closed below; OS errors (permissions) are told apart from corruption
    except OSError as err:
        raise InputError(os_error_message(err)) from None
    try:
        with f:
            saved = torch.load(f, map_location="cpu", weights_only=True)  # always: a checkpoint never runs code
    except Exception as err:  # truncated / empty / not a torch file / refused by weights_only
        why = type(err).__name__  # torch's own text is long and suggests unsafe loading: never shown
        raise InputError(
            f"cannot read checkpoint {file} ({why}): a truncated, empty or foreign file; delete it to start the run "
            "again"
        ) from None
    if not isinstance(saved, dict) or not {"config", "epoch", "model", "method"} <= set(saved):
        raise InputError(f"{file} is not a varsmooth training checkpoint (needs config, epoch, model and method)")
    return Checkpoint.from_dict(saved)


def validate(ck: Checkpoint, cfg: Any, file: str | Path) -> None:
    """Check every field of a loaded checkpoint against the run's resolved config ``cfg`` before any is used:
    the format, a non-negative integer ``epoch`` no later than ``cfg.epochs``, a history of one record per
    finished epoch, tensors where tensors belong, one learning rate per parameter group. InputError naming
    ``file`` and the field otherwise (the weights' keys and shapes are checked by :func:`restore`)."""

    def bad(field_name: str, allowed: str) -> InputError:
        return InputError(f"{file}: field {field_name!r} {allowed}; the checkpoint is corrupt or foreign, delete it")

    if not isinstance(ck.format, int) or isinstance(ck.format, bool) or ck.format != FORMAT:
        raise bad("format", f"must be {FORMAT}, got {ck.format!r}")
    if not isinstance(ck.config, dict):
        raise bad("config", "must be a mapping")
    epoch = ck.epoch
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise bad("epoch", f"must be an integer >= 0, got {epoch!r}")
    if epoch > cfg.epochs:
        raise InputError(f"{Path(file).parent} holds a run already at epoch {epoch} > epochs={cfg.epochs}; "
                         f"give epochs >= {epoch} or another --out")  # fmt: skip
    if not isinstance(ck.model, dict) or not all(isinstance(v, torch.Tensor) for v in ck.model.values()):
        raise bad("model", "must map parameter names to tensors")
    if not isinstance(ck.method, dict) or not isinstance(ck.method.get("base_lrs"), list):
        raise bad("method", "must hold the optimizer state and base_lrs")
    lrs = ck.method["base_lrs"]
    if not lrs or not all(isinstance(v, float | int) and not isinstance(v, bool) and v >= 0 for v in lrs):
        raise bad("method.base_lrs", f"must be a list of learning rates >= 0, got {lrs!r}")
    rng_keys = {"torch", "numpy", "python", "generators"}
    if not isinstance(ck.rng, list) or not all(isinstance(r, dict) and rng_keys <= set(r) for r in ck.rng):
        raise bad("rng", "must be a list of random states (torch, numpy, python, generators)")
    history = ck.history
    if not isinstance(history, list) or len(history) != epoch:
        raise bad("history", f"must hold one record per finished epoch ({epoch})")
    if not all(isinstance(h, dict) and h.get("epoch") == i + 1 for i, h in enumerate(history)):
        raise bad("history", "must hold the records of epochs 1, 2, ... in order")
    if ck.data_order is not None and not isinstance(ck.data_order, torch.Tensor):
        raise bad("data_order", "must be a tensor")
    if not isinstance(ck.schedule, dict) or not isinstance(ck.callbacks, list):
        raise bad("schedule" if not isinstance(ck.schedule, dict) else "callbacks", "has the wrong type")
    if ck.labels is not None and not isinstance(ck.labels, str):
        raise bad("labels", "must be a fingerprint string")


def restore(
    ckpt: Checkpoint,
    model: nn.Module,
    method: Method,
    *,
    generators: dict[str, torch.Generator] | None = None,
    rank: int = 0,
    world_size: int = 1,
    callbacks: Sequence[Any] = (),
) -> None:
    """Load ``ckpt`` into a freshly built ``model`` and ``method``; with ``generators``, also every random state
    of data-parallel rank ``rank`` and the states of ``callbacks``. InputError when the model does not fit."""
    own = model.state_dict()
    problems = [f"missing {k}" for k in own if k not in ckpt.model]
    problems += [f"unexpected {k}" for k in ckpt.model if k not in own]
    for k, v in own.items():
        if k in ckpt.model and tuple(ckpt.model[k].shape) != tuple(v.shape):
            problems.append(f"{k} has shape {tuple(ckpt.model[k].shape)}, the model {tuple(v.shape)}")
    if problems:
        model_name = ckpt.config.get("model")
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise InputError(f"the checkpoint's weights do not fit the {model_name!r} model built for these data: "
                         f"{'; '.join(problems[:3])}{more}")  # fmt: skip
    try:
        model.load_state_dict(ckpt.model)
    except RuntimeError as err:
        raise InputError(f"the checkpoint's weights do not fit the model ({type(err).__name__})") from None
    try:
        method.load_state_dict(ckpt.method)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as err:
        raise InputError(f"the checkpoint's optimizer state does not fit this run ({type(err).__name__}); "
                         "the checkpoint is corrupt or foreign, delete it") from None  # fmt: skip
    if generators is None:
        return
    if len(ckpt.rng) != world_size:
        raise InputError(f"checkpoint was written by {len(ckpt.rng)} processes; this run has {world_size}")
    try:
        set_rng_state(ckpt.rng[rank], generators)
        for cb, state in zip(callbacks, ckpt.callbacks, strict=False):
            if state is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(state)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as err:
        raise InputError(f"the checkpoint's random or callback state is unreadable ({type(err).__name__}); "
                         "the checkpoint is corrupt or foreign, delete it") from None  # fmt: skip


def rng_state(generators: dict[str, torch.Generator]) -> dict:
    """All random states of this process, as tensors and plain values: torch (CPU and CUDA), numpy's legacy
    global state, Python's ``random`` and the run's own generators (data order, augmentation, weight noise)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": _py_state_to_plain(random.getstate()),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(_py_state_from_plain(state["python"]))
    for name, g in generators.items():
        g.set_state(state["generators"][name])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_plain(s):
    version, internal, gauss = s
    return {"version": version, "internal": list(internal), "gauss": gauss}


def _py_state_from_plain(d):
    return (d["version"], tuple(d["internal"]), d["gauss"])


def labels_fingerprint(*arrays: np.ndarray) -> str:
    """SHA-256 of the training labels (and pool) a run trains on, to refuse resuming with different labels."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
