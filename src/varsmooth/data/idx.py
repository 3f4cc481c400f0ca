"""IDX files (LeCun & Cortes): MNIST, Fashion-MNIST, KMNIST, and any dataset stored the same way.

Format: a big-endian header — two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64), a byte ``ndim`` — then ``ndim`` big-endian uint32 sizes, then the payload of
``prod(sizes)`` items. Files may be gzip-compressed (``.gz``). A folder holds the four standard files
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``
(each plain or ``.gz``); an ``MD5SUMS`` file in the folder, if present, is checked.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import InputError
from .base import LabeledData, LabeledSplit
from .transforms import NORMALIZATION, normalize
from .validation import check_same_length, find_file, require_dir, validate_labels, verify_listed

__all__ = ["read_idx", "load_idx_dataset", "IDX_FILES", "IDX_CLASS_NAMES"]

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

IDX_CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],  # fmt: skip
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (plain or gzip) into an array of its stored shape and type (native byte order).

    Raises InputError naming the file for a bad magic number, a truncated payload or trailing bytes.
    """
    p = Path(path)
    try:
        raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(f"IDX file {str(p)!r} is corrupt or truncated (gzip: {err})") from None
    if len(raw) < 4:
        raise InputError(f"IDX file {str(p)!r} is truncated: {len(raw)} bytes, shorter than the 4-byte magic number")
    magic = int.from_bytes(raw[:4], "big")
    type_code, ndim = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or type_code not in _DTYPES or ndim == 0:
        raise InputError(
            f"IDX file {str(p)!r} has magic number 0x{magic:08X}; expected 0x0000TTDD with type TT in "
            "08/09/0B/0C/0D/0E and DD >= 1 dimensions (e.g. 0x00000803 for images, 0x00000801 for labels)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"IDX file {str(p)!r} is truncated inside its header ({len(raw)} of {header} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[type_code])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise InputError(
            f"IDX file {str(p)!r} is {what}: {len(raw)} bytes, expected {expected} for dims {dims} of {dtype.name}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path:
    return find_file(folder, (stem, stem + ".gz"), f"IDX file {stem}[.gz]")


def load_idx_dataset(
    name: str,
    data_dir: str | os.PathLike | None,
    *,
    normalization: str | tuple | None = None,
    verify: bool = True,
) -> LabeledData:
    """Load an IDX folder as images (N, 1, H, W) (or (N, C, H, W) for 4-D files), normalised.

    ``data_dir`` holds the four standard files (or a subfolder ``data_dir/<name>`` does). ``normalization`` is a
    key of :data:`NORMALIZATION` or a (mean, std) pair; by default the dataset's own constants (MNIST's for an
    unknown name). ``verify``: check files listed in an ``MD5SUMS`` file of the folder.
    """
    expected = ", ".join(f"{s}[.gz]" for s in IDX_FILES.values())
    folder = require_dir(data_dir, f"the IDX files {expected}")
    if not any((folder / (s + e)).is_file() for s in IDX_FILES.values() for e in ("", ".gz")):
        if (folder / name).is_dir():
            folder = folder / name
    paths = {key: _find(folder, stem) for key, stem in IDX_FILES.items()}
    if verify:
        verify_listed(folder, paths.values())
    if normalization is None:
        normalization = name if name in NORMALIZATION else "mnist"
    mean, std = NORMALIZATION[normalization] if isinstance(normalization, str) else normalization

    splits = {}
    for split in ("train", "test"):
        images, labels = read_idx(paths[(split, "images")]), read_idx(paths[(split, "labels")])
        if images.ndim not in (3, 4) or labels.ndim != 1:
            raise InputError(
                f"IDX files for {split}: images have {images.ndim} dims and labels {labels.ndim}; expected "
                "images (N, H, W) or (N, H, W, C) and labels (N,)"
            )
        check_same_length(**{paths[(split, "images")].name: images, paths[(split, "labels")].name: labels})
        images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
        scale = 255.0 if images.dtype == np.uint8 else 1.0
        splits[split] = (normalize(images, mean, std, scale=scale), labels.astype(np.int64))

    if name in IDX_CLASS_NAMES:
        class_names = IDX_CLASS_NAMES[name]
    else:  # another dataset in IDX format: classes 0..max label
        top = max(splits["train"][1].max(initial=0), splits["test"][1].max(initial=0))
        class_names = [str(i) for i in range(int(top) + 1)]
    num_classes = len(class_names)
    for split, (_, labels) in splits.items():
        validate_labels(labels, num_classes, name=f"{split} labels in {paths[(split, 'labels')].name}")
    return LabeledData(
        name=name,
        train=LabeledSplit(*splits["train"]),
        test=LabeledSplit(*splits["test"]),
        num_classes=num_classes,
        input_shape=tuple(splits["train"][0].shape[1:]),
        class_names=class_names,
        augment=None,
        normalization=(tuple(mean), tuple(std)),
        meta={"data_dir": str(folder), "files": [str(p) for p in paths.values()]},
    )
