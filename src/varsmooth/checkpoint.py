"""Checkpoints of a training run: everything needed to continue bitwise as if never stopped.

A checkpoint (``checkpoint.pt``, written atomically with :func:`varsmooth.io.torch_save`) is a dict of tensors and
plain values, loadable with ``torch.load(weights_only=True)``: the resolved config, the epoch reached, the model,
the method (optimizer state, OLS matrix), the metric history, callback states, a fingerprint of the training labels
and, per data-parallel rank, every random state: torch (CPU and CUDA), numpy's legacy global state, Python's
``random``, and the run's own generators (data order, augmentation, IVON noise).
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import torch

from .io import torch_save

FORMAT = 1


def rng_state(generators: dict[str, torch.Generator]) -> dict:
    """All random states of this process, as tensors and plain values."""
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
    """SHA-256 of the training labels (and mask) a run trains on, to refuse resuming with different labels."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def save(path: str | Path, state: dict) -> None:
    torch_save({"format": FORMAT, **state}, path)


def load(path: str | Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)
