"""The user's own labelled data from one path, for ``varsmooth suspects --data``: arrays, a CSV or an image folder.

:func:`load_user_data` reads

- ``.npz``: arrays ``X`` (or ``features``) of shape (N, ...) and ``y`` (or ``labels``) of shape (N,);
- ``.npy``: the features (N, ...); the labels come from ``labels``, a second ``.npy`` file of shape (N,);
- ``.csv``: a header row, one column of labels (``label_column``, default ``label``) and numeric feature columns;
- a folder of class subfolders of images (``root/<class>/*.png|jpg``; ``train/`` and ``test/`` subfolders are
  read together) through :func:`varsmooth.data.images.load_imagefolder`, images read lazily.

Labels may be integers (class ``k`` is named ``str(k)``, K = max + 1) or names (sorted; class ``k`` is the k-th
name). Every problem is an :class:`InputError` naming the file and what is allowed.
"""

from __future__ import annotations

import csv
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..errors import InputError
from .base import ImageListDataset
from .images import load_imagefolder

__all__ = ["UserData", "load_user_data", "FEATURE_KEYS", "LABEL_KEYS"]

FEATURE_KEYS = ("X", "features")
LABEL_KEYS = ("y", "labels")


@dataclass
class UserData:
    """Labelled examples read from the user's files."""

    features: np.ndarray | Dataset  # (N, ...) float32 array, or a Dataset of (C, H, W) image tensors
    labels: np.ndarray  # (N,) int64 in [0, K)
    class_names: list[str]  # K names
    source: str  # the path read
    kind: str  # "npz" | "npy" | "csv" | "images"
    files: list[str] | None = None  # (N,) image paths (images only)

    @property
    def is_image(self) -> bool:
        return self.kind == "images"


def _encode_labels(raw: np.ndarray, what: str) -> tuple[np.ndarray, list[str]]:
    raw = np.asarray(raw)
    if raw.ndim != 1 or raw.size == 0:
        raise InputError(f"labels in {what} must have shape (N,) with N >= 1, got shape {raw.shape}")
    if np.issubdtype(raw.dtype, np.number):
        if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)) or raw.min() < 0:
            raise InputError(f"labels in {what} must be integers >= 0 or class names, got values like {raw[:3]}")
        y = raw.astype(np.int64)
        return y, [str(k) for k in range(int(y.max()) + 1)]
    names, y = np.unique(raw.astype(str), return_inverse=True)
    return y.astype(np.int64), [str(n) for n in names]


def _features(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.number):
        raise InputError(f"features in {what} must be a numeric array of shape (N, D) or (N, C, H, W), got "
                         f"{x.dtype} of shape {x.shape}")  # fmt: skip
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise InputError(f"features in {what} contain NaN or inf")
    return x


def _load_array(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"cannot read {str(path)!r} as a numpy file: {e}".splitlines()[0]) from None


def _pick(arrays: dict, keys: tuple[str, ...], path: Path) -> np.ndarray:
    for k in keys:
        if k in arrays:
            return arrays[k]
    have = ", ".join(sorted(arrays)) or "none"
    raise InputError(f"{str(path)!r} has no array named {' or '.join(keys)} (arrays: {have})")


def _read_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"cannot read {str(path)!r} as CSV: {e}".splitlines()[0]) from None
    if len(rows) < 2:
        raise InputError(f"{str(path)!r} needs a header row and at least one example row")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        cols = ", ".join(header[:8]) + (f", ... ({len(header)} columns)" if len(header) > 8 else "")
        raise InputError(f"{str(path)!r} has no label column {label_column!r} (columns: {cols}); "
                         "name it with --label-column")  # fmt: skip
    li = header.index(label_column)
    if len(header) < 2:
        raise InputError(f"{str(path)!r} has no feature columns besides {label_column!r}")
    labels, feats = [], []
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputError(f"{str(path)!r} line {r} has {len(row)} fields; the header has {len(header)}")
        labels.append(row[li].strip())
        try:
            feats.append([float(v) for j, v in enumerate(row) if j != li])
        except ValueError:
            bad = next(j for j, v in enumerate(row) if j != li and not _is_float(v))
            raise InputError(f"{str(path)!r} line {r}, column {header[bad]!r}: {row[bad]!r} is not a number") from None
    raw = np.array(labels)
    if all(_is_float(v) for v in labels):
        raw = raw.astype(np.float64)
    return np.array(feats, dtype=np.float64), raw


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _read_images(root: Path, image_size: int | None) -> UserData:
    data = load_imagefolder(root, size=image_size, test_fraction=0.5)  # both halves are read back together
    parts = [data.train.features, data.test.features]
    paths = [p for ds in parts for p in ds.paths]
    labels = np.concatenate([data.train.labels.numpy(), data.test.labels.numpy()])
    order = np.lexsort((np.array(paths), labels))  # by class, then file path
    first = parts[0]
    ds = ImageListDataset([paths[i] for i in order], size=first.size, resize=first.resize, mode=first.mode,
                          mean=first.mean, std=first.std)  # fmt: skip
    return UserData(ds, labels[order].astype(np.int64), list(data.class_names), str(root), "images", ds.paths)


def load_user_data(
    path: str | os.PathLike,
    *,
    labels: str | os.PathLike | None = None,
    label_column: str = "label",
    image_size: int | None = None,
) -> UserData:
    """Read labelled examples from ``path`` (module docstring); raises :class:`InputError` naming the problem."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"--data {str(p)!r} does not exist; give an .npz, .npy or .csv file or an image folder")
    if image_size is not None and image_size < 4:
        raise InputError(f"image size must be >= 4 pixels, got {image_size}")
    if p.is_dir():
        if labels is not None:
            raise InputError("--labels is for an .npy features file; an image folder's labels are its subfolders")
        return _read_images(p, image_size)
    suffix = p.suffix.lower()
    if suffix not in (".npz", ".npy", ".csv"):
        raise InputError(f"--data {str(p)!r}: unsupported file type {suffix or '(none)'!r}; allowed: .npz, .npy, "
                         ".csv, or a folder of class subfolders of images")  # fmt: skip
    if labels is not None and suffix != ".npy":
        raise InputError(f"--labels goes with an .npy features file, not with {suffix}")
    if suffix == ".npz":
        arrays = _load_array(p)
        x, raw = _pick(arrays, FEATURE_KEYS, p), _pick(arrays, LABEL_KEYS, p)
    elif suffix == ".npy":
        if labels is None:
            raise InputError(f"--data {str(p)!r} holds features only; give the labels with --labels FILE.npy")
        if not Path(labels).is_file() or Path(labels).suffix.lower() != ".npy":
            raise InputError(f"--labels {str(labels)!r} must be an existing .npy file of shape (N,)")
        x, raw = _load_array(p), _load_array(Path(labels))
    else:
        x, raw = _read_csv(p, label_column)
    x = _features(np.asarray(x), str(p))
    y, names = _encode_labels(raw, str(labels or p))
    if len(x) != len(y):
        raise InputError(f"{str(p)!r}: {len(x)} feature rows but {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise InputError(f"{str(p)!r}: the labels name only one class; label-error detection needs at least 2")
    return UserData(x, y, names, str(p), suffix[1:])

