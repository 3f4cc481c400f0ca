"""CIFAR-10 / CIFAR-100 python batches (Krizhevsky 2009), read with a restricted unpickler.

CIFAR-10 (``cifar-10-batches-py``): ``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``.
CIFAR-100 (``cifar-100-python``): ``train``, ``test``, ``meta``. Each batch is a pickled dict with
``data`` (N, 3072) uint8 (1024 red, 1024 green, 1024 blue values, row-major 32x32) and ``labels`` (CIFAR-10) or
``fine_labels`` / ``coarse_labels`` (CIFAR-100). Keys are bytes (Python 2 pickles read with ``encoding="bytes"``)
or str; both are accepted. Nothing but plain containers, bytes and numpy arrays is unpickled (see
:mod:`varsmooth.data.safe_pickle`). An ``MD5SUMS`` file in the folder, if present, is checked.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .base import LabeledData, LabeledSplit
from .safe_pickle import restricted_load
from .transforms import NORMALIZATION, normalize
from .validation import check_same_length, require_dir, validate_labels, verify_listed

__all__ = ["read_cifar_batch", "load_cifar"]

_LAYOUT = {
    "cifar10": {
        "subdir": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "names_key": "label_names",
        "num_classes": 10,
    },
    "cifar100": {
        "subdir": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "names_key": "fine_label_names",
        "num_classes": 100,
    },
}

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _str_keys(d: dict) -> dict:
    return {(k.decode("latin-1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def _load_dict(path: Path) -> dict:
    with open(path, "rb") as f:
        obj = restricted_load(f, source=path)
    if not isinstance(obj, dict):
        raise InputError(f"{str(path)!r} holds a {type(obj).__name__}; a CIFAR batch is a dict")
    return _str_keys(obj)


def read_cifar_batch(path: str | os.PathLike, *, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file -> (images (N, 3, 32, 32) uint8, labels (N,) int64)."""
    p = Path(path)
    d = _load_dict(p)
    if "data" not in d or label_key not in d:
        raise InputError(f"{str(p)!r} has keys {sorted(d)}; a CIFAR batch needs 'data' and {label_key!r}")
    data = np.asarray(d["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise InputError(f"{str(p)!r}: 'data' is {data.dtype} {data.shape}; expected uint8 (N, 3072)")
    labels = np.asarray(d[label_key])
    check_same_length(**{f"{p.name} data": data, f"{p.name} {label_key}": labels})
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar(
    name: str, data_dir: str | os.PathLike | None, *, label_mode: str = "fine", verify: bool = True
) -> LabeledData:
    """Load CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``; ``label_mode`` "fine" (100 classes) or
    "coarse" (20 superclasses)) from ``data_dir`` or its standard subfolder. Images (N, 3, 32, 32), normalised
    with the dataset's constants; ``augment="cifar"``.
    """
    layout = _LAYOUT[name]
    files = layout["train"] + layout["test"]
    folder = require_dir(data_dir, f"the {name} python batches ({', '.join(files)})")
    if not (folder / files[0]).is_file() and (folder / layout["subdir"]).is_dir():
        folder = folder / layout["subdir"]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise InputError(f"missing {name} batch file(s) {', '.join(missing)} in {str(folder)!r}; expected {files}")
    if verify:
        verify_listed(folder, [folder / f for f in files + [layout["meta"]]])

    num_classes, names_key, label_key = layout["num_classes"], layout["names_key"], "labels"
    if name == "cifar100":
        if label_mode not in ("fine", "coarse"):
            raise InputError(f"label_mode {label_mode!r} is invalid for cifar100; allowed: fine, coarse")
        label_key, names_key = f"{label_mode}_labels", f"{label_mode}_label_names"
        num_classes = 100 if label_mode == "fine" else 20

    splits = {}
    for split in ("train", "test"):
        parts = [read_cifar_batch(folder / f, label_key=label_key) for f in layout[split]]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        validate_labels(labels, num_classes, name=f"{name} {split} labels")
        splits[split] = LabeledSplit(normalize(images, *NORMALIZATION[name]), labels)

    class_names = CIFAR10_CLASSES if name == "cifar10" else [str(i) for i in range(num_classes)]
    meta_path = folder / layout["meta"]
    if meta_path.is_file():
        raw = _load_dict(meta_path).get(names_key)
        if raw is not None and len(raw) == num_classes:
            class_names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in raw]
    return LabeledData(
        name=name,
        train=splits["train"],
        test=splits["test"],
        num_classes=num_classes,
        input_shape=(3, 32, 32),
        class_names=class_names,
        augment="cifar",
        normalization=NORMALIZATION[name],
        meta={"data_dir": str(folder), "files": files, "label_mode": label_mode if name == "cifar100" else None},
    )
