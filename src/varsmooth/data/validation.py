"""Checks on user data: labels in range, finite features, matching lengths, files that exist.

Every check raises :class:`~varsmooth.errors.InputError` with one line naming the bad value and what is allowed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = [
    "MAX_CLASSES",
    "validate_labels",
    "validate_features",
    "check_same_length",
    "require_dir",
    "find_file",
    "verify_md5",
    "read_md5sums",
]


MAX_CLASSES = 10_000  # ImageNet-21k's leaf classes aside, every labelled set the paper and its users meet has fewer


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def validate_labels(labels, num_classes: int, *, name: str = "labels") -> np.ndarray:
    """Check that ``labels`` (N,) are integers in ``[0, num_classes)``; return them as an int64 array (N,)."""
    arr = _to_numpy(labels)
    if num_classes < 1:
        raise InputError(f"num_classes={num_classes} is invalid; it must be a positive integer")
    if arr.ndim != 1:
        raise InputError(f"{name} have shape {tuple(arr.shape)}; expected a 1-D array of class indices")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InputError(f"{name} have dtype {arr.dtype} with non-integer values; expected class indices")
    arr = arr.astype(np.int64, copy=False)
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{name}[{i}] = {arr[i]} is out of range; labels must be integers in [0, {num_classes - 1}] "
            f"({int(bad.sum())} bad value(s))"
        )
    return arr


def validate_features(x, *, name: str = "features") -> None:
    """Check that every entry of ``x`` (N, ...) is finite (no NaN or inf)."""
    arr = _to_numpy(x)
    if arr.dtype.kind not in "fiub":
        what = "complex numbers (the imaginary part would be lost)" if arr.dtype.kind == "c" else "no numbers"
        raise InputError(f"{name} have dtype {arr.dtype}: {what}; expected real numbers")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            flat = int(np.flatnonzero(bad.reshape(-1))[0])
            idx = np.unravel_index(flat, arr.shape)
            raise InputError(
                f"{name}{list(map(int, idx))} = {arr[idx]}: features must be finite (found {int(bad.sum())} "
                "NaN/inf value(s))"
            )


def check_same_length(**arrays) -> int:
    """Check that all keyword arguments have the same length; return it. ``check_same_length(x=x, labels=y)``."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise InputError(f"length mismatch: {desc}; they must have the same number of examples")
    return next(iter(lengths.values()), 0)


def require_dir(path: str | os.PathLike | None, what: str) -> Path:
    """``path`` as a Path if it is an existing folder, else InputError naming it and what it should hold."""
    if path is None:
        raise InputError(f"{what}: no data directory given (use --data-dir)")
    p = Path(path).expanduser()
    if not p.is_dir():
        raise InputError(f"data directory {str(p)!r} does not exist; expected a folder with {what}")
    return p


def find_file(folder: Path, names: Iterable[str], what: str) -> Path:
    """The first of ``names`` that exists in ``folder``; InputError listing what was expected otherwise."""
    names = list(names)
    for n in names:
        if (folder / n).is_file():
            return folder / n
    raise InputError(f"missing {what} in {str(folder)!r}: expected one of {', '.join(names)}")


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_md5(path: str | os.PathLike, expected: str) -> None:
    """Raise InputError if the MD5 of the file at ``path`` is not ``expected`` (hex, case-insensitive)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"cannot verify checksum: file {str(p)!r} does not exist")
    got = _md5(p)
    if got != expected.strip().lower():
        raise InputError(f"checksum mismatch for {str(p)!r}: md5 {got}, expected {expected.strip().lower()}")


def read_md5sums(path: str | os.PathLike) -> dict[str, str]:
    """Parse an ``md5sum`` output file (``<hex>  <name>`` or ``<hex> *<name>`` per line) into ``{name: hex}``."""
    out: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or len(parts[0]) != 32 or any(c not in "0123456789abcdefABCDEF" for c in parts[0]):
            raise InputError(f"{str(path)!r} line {lineno}: expected '<md5 hex>  <file name>', got {line[:60]!r}")
        out[parts[1].lstrip("*").strip()] = parts[0].lower()
    return out


def verify_listed(folder: Path, files: Iterable[Path]) -> None:
    """If ``folder/MD5SUMS`` exists, verify each of ``files`` that it lists (unlisted files are not checked)."""
    sums_path = folder / "MD5SUMS"
    if not sums_path.is_file():
        return
    sums = read_md5sums(sums_path)
    for f in files:
        if f.name in sums:
            verify_md5(f, sums[f.name])
