"""Label corruption: synthetic flips and natural noisy-label files.

A corruption model is a row-stochastic transition matrix ``P`` (K, K) with ``P[i, j] = Pr(noisy = j | true = i)``
(the convention of Co-teaching, Han et al. 2018, and Yu et al. 2019):

* symmetric, rate r:   ``P_ii = 1 - r``, ``P_ij = r / (K - 1)`` for j != i;
* pair-flip, rate r:   ``P_ii = 1 - r``, ``P_i,(i+1 mod K) = r`` (CIFAR-10 order airplane -> automobile -> ... ->
  truck -> airplane);
* class-dependent (paper Eq. 20-21), start level kappa, increase beta (default 0.05):
  ``P_ii = 1 - (kappa + beta i)`` for i = 1..K (class index c = i - 1), and
  ``P_ij = (kappa + beta i) / (K - 1)`` for j != i. A row with ``kappa + beta i`` outside [0, 1] is rejected.

Flips are drawn with an explicit seed (``numpy.random.Generator``); :func:`corrupt_labels` returns the noisy
labels and the mask of flipped examples, so a run can store both and its realised corruption rate.
Natural noise (Clothing1M, CIFAR-10N/100N) comes as label files read by :func:`read_noisy_label_file`.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import check_regular, open_regular
from .npfiles import read_npy
from .safe_pickle import numpy_safe_globals
from .validation import check_same_length, validate_features, validate_labels

__all__ = [
    "CorruptionKind",
    "CorruptionSpec",
    "parse_corruption",
    "transition_matrix",
    "corrupt_labels",
    "corruption_summary",
    "read_noisy_label_file",
    "validate_labels",
    "validate_features",
    "check_same_length",
    "DEFAULT_BETA",
]

DEFAULT_BETA = 0.05


class CorruptionKind(str, Enum):
    NONE = "none"
    SYMMETRIC = "symmetric"
    PAIRFLIP = "pairflip"
    CLASS_DEPENDENT = "class-dependent"


@dataclass(frozen=True)
class CorruptionSpec:
    """A synthetic corruption: ``kind``, ``rate`` (r, or kappa for class-dependent) and ``beta`` (class-dependent)."""

    kind: CorruptionKind = CorruptionKind.NONE
    rate: float = 0.0
    beta: float = DEFAULT_BETA

    def __post_init__(self):
        object.__setattr__(self, "kind", _parse_kind(self.kind))
        if not (0.0 <= self.rate < 1.0) or not np.isfinite(self.rate):
            raise InputError(f"corruption rate {self.rate} for {self.kind.value!r} is outside [0, 1)")
        if not np.isfinite(self.beta):
            raise InputError(f"class-dependent beta {self.beta} must be a finite number")

    def __str__(self) -> str:
        if self.kind is CorruptionKind.NONE:
            return "none"
        if self.kind is CorruptionKind.CLASS_DEPENDENT:
            return f"class-dependent:{self.rate:g}:{self.beta:g}"
        return f"{self.kind.value}:{self.rate:g}"


def _parse_kind(kind) -> CorruptionKind:
    try:
        return CorruptionKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in CorruptionKind)
        raise InputError(f"unknown corruption kind {kind!r}; allowed: {allowed}") from None


_FORMS = "'none', 'symmetric:R', 'pairflip:R', 'class-dependent:KAPPA[:BETA]'"


def parse_corruption(text: str | CorruptionSpec | None) -> CorruptionSpec:
    """Parse ``"none" | "symmetric:R" | "pairflip:R" | "class-dependent:KAPPA[:BETA]"`` into a :class:`CorruptionSpec`.

    Rates must lie in [0, 1); ``None`` and ``""`` mean no corruption. A CorruptionSpec passes through unchanged.
    """
    if isinstance(text, CorruptionSpec):
        return text
    if text is None or str(text).strip() == "":
        return CorruptionSpec()
    parts = [p.strip() for p in str(text).strip().split(":")]
    kind = _parse_kind(parts[0].lower().replace("_", "-").replace("pair-flip", "pairflip"))
    n_numbers = {CorruptionKind.NONE: (0, 0), CorruptionKind.CLASS_DEPENDENT: (1, 2)}.get(kind, (1, 1))
    if not n_numbers[0] <= len(parts) - 1 <= n_numbers[1]:
        raise InputError(f"corruption {text!r} is malformed; expected one of {_FORMS}")
    numbers = []
    for p in parts[1:]:
        if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", p):
            raise InputError(f"corruption {text!r}: {p!r} is not a number; expected one of {_FORMS}")
        numbers.append(float(p))
    if numbers and not 0.0 <= numbers[0] < 1.0:
        raise InputError(f"corruption rate {numbers[0]:g} in {text!r} is outside [0, 1)")
    return CorruptionSpec(kind, *numbers)


def transition_matrix(spec: CorruptionSpec | str, num_classes: int) -> np.ndarray:
    """The row-stochastic transition matrix ``P`` (K, K), float64, ``P[true, noisy]``, of a corruption spec."""
    spec = parse_corruption(spec)
    k = int(num_classes)
    if k < 1:
        raise InputError(f"num_classes={num_classes} is invalid; it must be a positive integer")
    if spec.kind is CorruptionKind.NONE or (spec.rate == 0.0 and spec.kind is not CorruptionKind.CLASS_DEPENDENT):
        return np.eye(k)
    if k < 2:
        raise InputError(f"corruption {str(spec)!r} needs at least 2 classes, got num_classes={k}")
    if spec.kind is CorruptionKind.SYMMETRIC:
        p = np.full((k, k), spec.rate / (k - 1))
        np.fill_diagonal(p, 1.0 - spec.rate)
    elif spec.kind is CorruptionKind.PAIRFLIP:
        p = np.eye(k) * (1.0 - spec.rate)
        p[np.arange(k), (np.arange(k) + 1) % k] = spec.rate
    else:  # class-dependent, Eq. 20-21 with i = 1..K
        flip = spec.rate + spec.beta * np.arange(1, k + 1)
        bad = np.flatnonzero((flip < -1e-12) | (flip > 1.0 + 1e-12))
        if bad.size:
            c = int(bad[0])
            raise InputError(
                f"class-dependent corruption {str(spec)!r} gives class {c} (i={c + 1}) a flip rate kappa + beta*i = "
                f"{flip[c]:.4g} and a diagonal entry P_ii = {1 - flip[c]:.4g}; each must lie in [0, 1] for all "
                f"{k} classes (need kappa + beta*K <= 1 and kappa + beta >= 0)"
            )
        flip = np.clip(flip, 0.0, 1.0)
        p = np.repeat((flip / (k - 1))[:, None], k, axis=1)
        np.fill_diagonal(p, 1.0 - flip)
    return p


def _check_matrix(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise InputError(f"transition matrix has shape {p.shape}; expected a square (K, K) matrix")
    if not np.all(np.isfinite(p)) or (p < 0).any():
        raise InputError("transition matrix has negative or non-finite entries; entries must be probabilities")
    sums = p.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-8):
        i = int(np.argmax(np.abs(sums - 1.0)))
        raise InputError(f"transition matrix row {i} sums to {sums[i]:.6g}; every row must sum to 1")
    return p


def corrupt_labels(labels: np.ndarray, P: np.ndarray, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw a noisy label for every example: ``noisy[n] ~ Categorical(P[labels[n]])``.

    Args:
        labels: (N,) int true labels in [0, K).
        P: (K, K) row-stochastic transition matrix ``P[true, noisy]``.
        seed: seed of the ``numpy.random.Generator`` (the same seed gives the same flips).

    Returns:
        ``(noisy, is_noisy)``: (N,) int64 noisy labels and (N,) bool mask ``noisy != labels``.
        The realised corruption rate is ``is_noisy.mean()``.
    """
    p = _check_matrix(P)
    y = validate_labels(labels, p.shape[0])
    rng = np.random.default_rng(seed)
    u = rng.random(y.shape[0])  # one uniform per example, drawn in example order
    cdf = np.cumsum(p, axis=1)
    cdf[:, -1] = 1.0  # guard against round-off leaving u > cdf[-1]
    noisy = np.empty_like(y)
    for c in np.unique(y):
        idx = y == c
        noisy[idx] = np.searchsorted(cdf[c], u[idx], side="right")
    noisy = np.minimum(noisy, p.shape[0] - 1)
    return noisy, noisy != y


def corruption_summary(labels: np.ndarray, noisy: np.ndarray, num_classes: int) -> dict:
    """Realised corruption statistics to store with a run.

    Returns a dict with ``rate`` (fraction of flipped labels), ``n_flipped``, ``n``, ``per_class_rate`` (K,) list (NaN
    for an absent class) and ``empirical_matrix`` (K, K) nested list of ``Pr(noisy = j | true = i)``.
    """
    y = validate_labels(labels, num_classes)
    z = validate_labels(noisy, num_classes, name="noisy labels")
    check_same_length(labels=y, noisy_labels=z)
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (y, z), 1.0)
    totals = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        emp = counts / totals[:, None]
        per_class = 1.0 - np.diag(counts) / totals
    flipped = int((y != z).sum())
    return {
        "rate": flipped / max(len(y), 1),
        "n_flipped": flipped,
        "n": int(len(y)),
        "per_class_rate": per_class.tolist(),
        "empirical_matrix": emp.tolist(),
    }


# CIFAR-N (Wei et al. 2022) .pt files: a dict of numpy arrays; CIFAR-10N keys: clean_label, aggre_label,
# random_label1..3, worse_label; CIFAR-100N: clean_label, noisy_label, (clean|noisy)_coarse_label.
CIFARN_KEYS = ("worse_label", "aggre_label", "random_label1", "random_label2", "random_label3", "noisy_label")


def read_noisy_label_file(
    path: str | os.PathLike, n: int | None = None, *, key: str | None = None, num_classes: int | None = None
) -> np.ndarray:
    """Read natural noisy labels aligned with a dataset's training split; returns (N,) int64.

    Formats: ``.npy`` (1-D int array), ``.csv`` / ``.txt`` (one label per line; a non-numeric first line is a
    header), and the CIFAR-N ``.pt`` dict (loaded with ``torch.load(weights_only=True)``; ``key`` picks the
    entry, e.g. ``"worse_label"``, default the first of ``CIFARN_KEYS`` present). ``n`` (if given) must equal the
    number of labels; ``num_classes`` (if given) bounds them.
    """
    p = check_regular(Path(path).expanduser(), "a .npy, .csv, .txt or CIFAR-N .pt file of labels")
    if not p.is_file():
        raise InputError(f"noisy label file {str(p)!r} does not exist; expected a .npy, .csv, .txt or CIFAR-N .pt")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            arr = read_npy(p)
        elif suffix in (".csv", ".txt"):
            arr = _read_label_lines(p)
        elif suffix in (".pt", ".pth"):
            arr = _read_cifarn(p, key)
        else:
            raise InputError(f"noisy label file {str(p)!r}: unknown extension {suffix!r}; allowed .npy .csv .txt .pt")
    except InputError:
        raise
    except Exception as err:  # corrupt file: numpy / torch / zip errors
        msg = f"{type(err).__name__}: {err}".split("\n")[0]
        raise InputError(f"cannot read noisy label file {str(p)!r}: {msg}") from None
    arr = np.asarray(arr)
    if arr.ndim == 2 and 1 in arr.shape:  # a column or row vector
        arr = arr.reshape(-1)
    bound = num_classes if num_classes is not None else np.iinfo(np.int64).max
    labels = validate_labels(arr, bound, name=f"labels in {p.name}")
    if n is not None and len(labels) != n:
        raise InputError(f"noisy label file {str(p)!r} has {len(labels)} labels; the training split has {n}")
    return labels


def _read_label_lines(p: Path) -> np.ndarray:
    with open_regular(p, text=True) as f:
        lines = [ln.strip() for ln in f.read().splitlines()]
    lines = [ln for ln in lines if ln]
    if lines and not re.fullmatch(r"[+-]?\d+(\.0*)?", lines[0].split(",")[-1].strip()):
        lines = lines[1:]  # header
    out = np.empty(len(lines), dtype=np.int64)
    for i, ln in enumerate(lines):
        field = ln.split(",")[-1].strip()  # "label" or "index,label"
        try:
            out[i] = int(float(field))
        except ValueError:
            raise InputError(f"{str(p)!r}: line {i + 1} {ln[:40]!r} is not an integer label") from None
    return out


def _read_cifarn(p: Path, key: str | None) -> np.ndarray:
    import torch

    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            with open_regular(p) as f:
                obj = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"a callable {found.group(1)}" if found else "something other than arrays"
        raise InputError(
            f"{str(p)!r}: pickle references {what} (not a plain container, tensor or numpy array); refusing to load"
        ) from None
    if not isinstance(obj, dict):
        return np.asarray(obj.numpy() if hasattr(obj, "numpy") else obj)
    if key is None:
        key = next((k for k in CIFARN_KEYS if k in obj), None)
    if key not in obj:
        raise InputError(f"{str(p)!r} has no key {key!r}; available keys: {', '.join(map(str, obj))}")
    v = obj[key]
    return np.asarray(v.numpy() if hasattr(v, "numpy") else v)
