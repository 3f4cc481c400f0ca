"""The user's own labelled data from one path, for ``varsmooth suspects --data``: arrays, a CSV or an image folder.

:func:`load_user_data` reads

- ``.npz``: arrays ``X`` (or ``features``) of shape (N, ...) and ``y`` (or ``labels``) of shape (N,);
- ``.npy``: the features (N, ...); the labels come from ``labels``, a second ``.npy`` file of shape (N,);
- ``.csv``: a header row, one column of labels (``label_column``, default ``label``) and numeric feature columns;
- a folder of class subfolders of images (``root/<class>/*.png|jpg``; ``train/`` and ``test/`` subfolders are
  read together) through :func:`varsmooth.data.images.load_imagefolder`, images read lazily.

Labels may be integers (class ``k`` is named ``str(k)``, K = max + 1) or names (sorted; class ``k`` is the k-th
name), never a mix, never empty. Integers lie in [0, min(N, MAX_CLASSES) - 1]: no more classes than examples
(a class index >= N names classes that cannot all have an example) and at most
:data:`~varsmooth.data.validation.MAX_CLASSES` (10,000) classes, so the (N, K) tables of probabilities the
detector keeps stay at most 40 KB per example; the bound is checked before anything of size K is built. Images:
at most :data:`MAX_IMAGE_SIZE` pixels a side, every image decoded once before training. Every problem is an
:class:`InputError` naming the file (the row, the value) and what is allowed.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..errors import InputError
from ..io import check_regular, open_regular
from .base import ImageListDataset
from .images import load_imagefolder, verify_images
from .npfiles import read_npy, read_npz
from .validation import MAX_CLASSES

__all__ = ["UserData", "load_user_data", "FEATURE_KEYS", "LABEL_KEYS", "MAX_IMAGE_SIZE"]

FEATURE_KEYS = ("X", "features")
LABEL_KEYS = ("y", "labels")
MAX_IMAGE_SIZE = 1024  # pixels a side: a float32 RGB image of 1024 x 1024 is 12 MiB, a batch of 64 0.8 GiB


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


def _label_error(where: str, value, allowed: str) -> InputError:
    return InputError(f"{where}: label {value!r} is not allowed; {allowed}")


def _encode_labels(raw, what: str, where) -> tuple[np.ndarray, list[str]]:
    """(N,) int64 class indices and the K class names of the labels ``raw`` (N,): integers (class ``k`` is named
    ``str(k)``, K = max + 1) or names (sorted). ``where(i)`` names entry ``i`` (``line 12 of 'a.csv'``). Every
    bound is checked before anything of size K is built: integers in [0, min(N, MAX_CLASSES) - 1], no empty
    label, no mix of numbers and names, at most MAX_CLASSES names."""
    raw = np.asarray(raw)
    if raw.ndim != 1 or raw.size == 0:
        raise InputError(f"labels in {what} must have shape (N,) with N >= 1, got shape {raw.shape}")
    n = raw.size
    top = min(n, MAX_CLASSES)
    rule = (f"labels must be integers in [0, {top - 1}] (with {n} examples, at most {top} classes; "
            f"the cap is {MAX_CLASSES}) or class names")  # fmt: skip
    if raw.dtype.kind in "fiu":
        return _integer_labels(raw, where, top, rule)
    if raw.dtype.kind == "c":
        raise InputError(f"labels in {what} are complex numbers (dtype {raw.dtype}); {rule}")
    if raw.dtype.kind not in "US":
        raise InputError(f"labels in {what} have dtype {raw.dtype}; {rule}")
    text = np.char.strip(raw.astype(str))
    empty = np.flatnonzero(text == "")
    if empty.size:
        raise InputError(f"{where(int(empty[0]))}: the label is empty ({empty.size} empty label(s)); every row "
                         "needs a class")  # fmt: skip
    numeric = np.array([_is_float(v) for v in text], dtype=bool)
    if numeric.all():
        return _integer_labels(text.astype(np.float64), where, top, rule, shown=text)
    if numeric.any():
        i, j = int(np.flatnonzero(numeric)[0]), int(np.flatnonzero(~numeric)[0])
        raise InputError(f"{where(i)} has the number {str(text[i])!r}, {where(j)} the name {str(text[j])!r}; "
                         "labels must be class indices or class names, not both")  # fmt: skip
    names, y = np.unique(text, return_inverse=True)
    if len(names) > MAX_CLASSES:
        raise InputError(f"labels in {what} name {len(names)} classes; at most {MAX_CLASSES} are allowed")
    return y.astype(np.int64), [str(v) for v in names]


def _integer_labels(raw: np.ndarray, where, top: int, rule: str, shown: np.ndarray | None = None):
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(raw) | (raw != np.round(raw)) | (raw < 0) | (raw >= top) if raw.dtype.kind == "f" else (
            (raw < 0) | (raw >= top))  # fmt: skip
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = (shown if shown is not None else raw)[i]
        value = value.item() if hasattr(value, "item") else value
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        more = f" ({int(bad.sum())} bad labels)" if bad.sum() > 1 else ""
        raise _label_error(where(i), value, rule + more)
    y = raw.astype(np.int64)
    return y, [str(k) for k in range(int(y.max()) + 1)]


def _features(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype.kind == "c":
        raise InputError(f"features in {what} are complex numbers (dtype {x.dtype}); give real numbers (split the "
                         "real and imaginary parts into columns)")  # fmt: skip
    if x.ndim < 2 or x.dtype.kind not in "fiu":
        raise InputError(f"features in {what} must be a numeric array of shape (N, D) or (N, C, H, W), got "
                         f"{x.dtype} of shape {x.shape}")  # fmt: skip
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise InputError(f"features in {what} contain NaN or inf (or values beyond float32's range)")
    return x


def _read_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open_regular(path, text=True, what="a .csv file") as f:
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
    return np.array(feats, dtype=np.float64), np.array(labels, dtype=str)


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
    if image_size is None and max(first.size if isinstance(first.size, tuple) else (first.size,)) > MAX_IMAGE_SIZE:
        raise InputError(f"the images under {str(root)!r} are {first.size[1]}x{first.size[0]} pixels; give "
                         f"--image-size N with 4 <= N <= {MAX_IMAGE_SIZE} to resize them")  # fmt: skip
    ds = ImageListDataset([paths[i] for i in order], size=first.size, resize=first.resize, mode=first.mode,
                          mean=first.mean, std=first.std)  # fmt: skip
    verify_images(ds.paths)
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
    if image_size is not None and not 4 <= image_size <= MAX_IMAGE_SIZE:
        raise InputError(f"--image-size {image_size} is not allowed; give 4 <= N <= {MAX_IMAGE_SIZE} pixels")
    if p.is_dir():
        if labels is not None:
            raise InputError("--labels is for an .npy features file; an image folder's labels are its subfolders")
        return _read_images(p, image_size)
    check_regular(p, "an .npz, .npy or .csv file or an image folder")
    suffix = p.suffix.lower()
    if suffix not in (".npz", ".npy", ".csv"):
        raise InputError(f"--data {str(p)!r}: unsupported file type {suffix or '(none)'!r}; allowed: .npz, .npy, "
                         ".csv, or a folder of class subfolders of images")  # fmt: skip
    if labels is not None and suffix != ".npy":
        raise InputError(f"--labels goes with an .npy features file, not with {suffix}")
    if image_size is not None:
        raise InputError(f"--image-size goes with an image folder, not with {suffix}")
    label_file = p
    if suffix == ".npz":
        x, raw = read_npz(p, (FEATURE_KEYS, LABEL_KEYS))
    elif suffix == ".npy":
        if labels is None:
            raise InputError(f"--data {str(p)!r} holds features only; give the labels with --labels FILE.npy")
        label_file = Path(labels)
        if not label_file.exists() or label_file.suffix.lower() != ".npy":
            raise InputError(f"--labels {str(labels)!r} must be an existing .npy file of shape (N,)")
        x, raw = read_npy(p), read_npy(label_file)
    else:
        x, raw = _read_csv(p, label_column)
    x = _features(np.asarray(x), str(p))
    if suffix == ".csv":
        where = lambda i: f"{str(p)!r} line {i + 2}"  # noqa: E731 - the header is line 1
    else:
        where = lambda i: f"{str(label_file)!r} row {i + 1} (index {i})"  # noqa: E731
    y, names = _encode_labels(raw, repr(str(label_file)), where)
    if len(x) != len(y):
        raise InputError(f"{str(p)!r}: {len(x)} feature rows but {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise InputError(f"{str(p)!r}: the labels name only one class; label-error detection needs at least 2")
    return UserData(x, y, names, str(p), suffix[1:])
