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

from ..errors import InputError
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
        saved = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated / not a torch file / refused by weights_only
        why = type(err).__name__  # torch's own messages are long and suggest unsafe loading
        raise InputError(f"cannot read checkpoint {file} ({why}): a truncated or corrupt file?") from None
    if not isinstance(saved, dict) or not {"config", "epoch", "model", "method"} <= set(saved):
        raise InputError(f"{file} is not a varsmooth training checkpoint (needs config, epoch, model and method)")
    return Checkpoint.from_dict(saved)


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
    try:
        model.load_state_dict(ckpt.model)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        model_name = ckpt.config.get("model")
        raise InputError(
            f"the checkpoint's weights do not fit the {model_name!r} model built for these data: {first}"
        ) from None
    method.load_state_dict(ckpt.method)
    if generators is None:
        return
    if len(ckpt.rng) != world_size:
        raise InputError(f"checkpoint was written by {len(ckpt.rng)} processes; this run has {world_size}")
    set_rng_state(ckpt.rng[rank], generators)
    for cb, state in zip(callbacks, ckpt.callbacks, strict=False):
        if state is not None and hasattr(cb, "load_state_dict"):
            cb.load_state_dict(state)


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
