"""Datasets of image files, read lazily with PIL: Clothing1M (Xiao et al. 2015) and class-per-folder trees.

Clothing1M layout (text files in ``root`` or ``root/annotations``; image paths relative to ``root``):
``noisy_label_kv.txt`` and ``clean_label_kv.txt`` ("<image path> <label>" lines), ``noisy_train_key_list.txt``,
``clean_train_key_list.txt``, ``clean_val_key_list.txt``, ``clean_test_key_list.txt`` (one image path a line) and,
optionally, ``category_names_eng.txt`` (14 class names). The standard protocol trains on the noisy list with its
noisy labels and tests on the clean test list with clean labels. Images: shorter side resized to 256, centre crop
224, ImageNet normalisation.

Image folder: ``root/<class>/*.png|jpg|...``, or ``root/train/<class>/...`` plus ``root/test/<class>/...``; classes
are the sorted folder names. Without train/test folders a stratified test split is drawn with a fixed seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import file_kind, open_regular
from .base import ImageListDataset, LabeledData, LabeledSplit
from .transforms import NORMALIZATION, load_image
from .validation import find_file, require_dir

__all__ = ["load_clothing1m", "load_imagefolder", "CLOTHING1M_CLASSES", "IMAGE_EXTENSIONS"]

CLOTHING1M_CLASSES = [
    "T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket", "Downcoat", "Suit",
    "Shawl", "Dress", "Vest", "Underwear",
]  # fmt: skip
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

_LISTS = {
    "noisy": ("noisy_train_key_list.txt", "noisy_label_kv.txt"),
    "clean": ("clean_train_key_list.txt", "clean_label_kv.txt"),
    "val": ("clean_val_key_list.txt", "clean_label_kv.txt"),
    "test": ("clean_test_key_list.txt", "clean_label_kv.txt"),
}


def _read_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _read_kv(path: Path, num_classes: int) -> dict[str, int]:
    out = {}
    for lineno, line in enumerate(_read_lines(path), 1):
        parts = line.rsplit(None, 1)
        try:
            label = int(parts[1])
        except (IndexError, ValueError):
            raise InputError(
                f"{str(path)!r} line {lineno}: expected '<image path> <label>', got {line[:60]!r}"
            ) from None
        if not 0 <= label < num_classes:
            raise InputError(f"{str(path)!r} line {lineno}: label {label} is out of range [0, {num_classes - 1}]")
        out[parts[0]] = label
    return out


def load_clothing1m(
    data_dir: str | os.PathLike | None,
    *,
    train_list: str = "noisy",
    test_list: str = "test",
    size: int = 224,
    resize: int | None = 256,
) -> LabeledData:
    """Clothing1M as lazy splits: item i of ``features`` is a (3, size, size) float32 tensor.

    ``train_list``: "noisy" (1M images, noisy labels; the standard setting) or "clean" (clean train subset);
    ``test_list``: "test" or "val" (both clean).
    """
    choices = (("train_list", train_list, ("noisy", "clean")), ("test_list", test_list, ("test", "val")))
    for opt, value, allowed in choices:
        if value not in allowed:
            raise InputError(f"clothing1m {opt}={value!r} is invalid; allowed: {', '.join(allowed)}")
    needed = sorted({f for k in (train_list, test_list) for f in _LISTS[k]})
    root = require_dir(data_dir, f"Clothing1M ({', '.join(needed)} and the images)")
    ann = root if (root / needed[0]).is_file() or not (root / "annotations").is_dir() else root / "annotations"
    names_file = ann / "category_names_eng.txt"
    class_names = _read_lines(names_file) if names_file.is_file() else list(CLOTHING1M_CLASSES)
    k = len(class_names)
    mean, std = NORMALIZATION["imagenet"]
    splits, kv_cache = {}, {}
    for split, which in (("train", train_list), ("test", test_list)):
        list_name, kv_name = _LISTS[which]
        keys = _read_lines(find_file(ann, [list_name], "Clothing1M key list"))
        if kv_name not in kv_cache:
            kv_cache[kv_name] = _read_kv(find_file(ann, [kv_name], "Clothing1M label file"), k)
        kv = kv_cache[kv_name]
        missing = [key for key in keys if key not in kv]
        if missing:
            raise InputError(f"{len(missing)} image(s) of {list_name} have no label in {kv_name}, e.g. {missing[0]!r}")
        if not keys:
            raise InputError(f"Clothing1M key list {str(ann / list_name)!r} is empty")
        if not (root / keys[0]).is_file():
            raise InputError(f"Clothing1M image {str(root / keys[0])!r} (first of {list_name}) does not exist")
        labels = np.array([kv[key] for key in keys], dtype=np.int64)
        paths = [os.path.join(root, key) for key in keys]  # plain strings: the train list has 1M entries
        ds = ImageListDataset(paths, size=size, resize=resize, mean=mean, std=std)
        splits[split] = LabeledSplit(ds, labels)
    return LabeledData(
        name="clothing1m",
        train=splits["train"],
        test=splits["test"],
        num_classes=k,
        input_shape=(3, size, size),
        class_names=class_names,
        augment=None,
        normalization=(mean, std),
        meta={"data_dir": str(root), "train_list": train_list, "test_list": test_list},
    )


def _scan_classes(folder: Path) -> dict[str, list[Path]]:
    """{class folder name: its image files (recursively), sorted}. An unreadable folder, a dangling symlink or an
    image name that is not a regular file (a FIFO, a device) is an InputError naming it, never skipped."""
    out = {}
    for entry in _entries(folder):
        if _is_dir(entry):
            files = sorted(_images(Path(entry.path)))
            if files:
                out[entry.name] = files
    return dict(sorted(out.items()))


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError as err:
        why = "permission denied" if isinstance(err, PermissionError) else (err.strerror or type(err).__name__)
        raise InputError(f"cannot read the image folder {str(folder)!r}: {why}; fix its permissions or move it "
                         "out of the data folder") from None  # fmt: skip
    for entry in entries:
        if entry.is_symlink() and not os.path.exists(entry.path):
            raise InputError(f"{entry.path!r} is a dangling symlink (its target {os.readlink(entry.path)!r} does "
                             "not exist); remove it or restore the target")  # fmt: skip
    return entries


def _is_dir(entry: os.DirEntry) -> bool:
    return entry.is_dir(follow_symlinks=True)


def _images(folder: Path):
    for entry in _entries(folder):
        if _is_dir(entry):
            yield from _images(Path(entry.path))
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
            if not entry.is_file(follow_symlinks=True):
                mode = os.stat(entry.path).st_mode
                raise InputError(f"{entry.path!r} is named as an image but is {file_kind(mode)}, not a regular file; "
                                 "remove it")  # fmt: skip
            yield Path(entry.path)


def verify_images(paths: list) -> None:
    """Decode every image once (PIL ``load``), so that a truncated or foreign file is an InputError naming it
    before any training, not an error in the middle of a run."""
    from PIL import Image, UnidentifiedImageError

    for path in paths:
        try:
            with open_regular(path, what="an image file") as f, Image.open(f) as im:
                im.load()
        except UnidentifiedImageError:
            raise InputError(f"cannot read image {str(path)!r}: not an image format PIL reads, or its header is "
                             "truncated; remove or replace it") from None  # fmt: skip
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            why = str(err).splitlines()[0][:100] if str(err) else type(err).__name__
            raise InputError(f"cannot read image {str(path)!r}: {why}; remove or replace it") from None


def load_imagefolder(
    data_dir: str | os.PathLike | None,
    *,
    size: int | tuple[int, int] | None = None,
    resize: int | None = None,
    mode: str = "RGB",
    normalization: str | tuple | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> LabeledData:
    """A class-per-folder image tree as lazy splits; item i is a float32 tensor (C, H, W).

    ``size``: output size (default: the first image's H x W; other images are resized to it); ``resize``: shorter
    side before a centre crop; ``mode``: "RGB" (C = 3) or "L" (C = 1); ``normalization``: a key of NORMALIZATION
    or (mean, std) — default "imagenet" for RGB and mean 0.5 / std 0.5 for L. Without ``train/`` and ``test/``
    subfolders, a stratified ``test_fraction`` of each class (at least one image when it has two) becomes the
    test split, drawn with ``seed``.
    """
    if mode not in ("RGB", "L"):
        raise InputError(f"image mode {mode!r} is invalid; allowed: RGB, L")
    root = require_dir(data_dir, "class folders of images (root/<class>/*.png|jpg)")
    if (root / "train").is_dir() and (root / "test").is_dir():
        train_tree, test_tree = _scan_classes(root / "train"), _scan_classes(root / "test")
        extra = sorted(set(test_tree) - set(train_tree))
        if extra:
            raise InputError(f"test classes {extra} in {str(root / 'test')!r} have no training folder")
    else:
        if not 0.0 < test_fraction < 1.0:
            raise InputError(f"test_fraction={test_fraction} is invalid; it must lie in (0, 1)")
        train_tree, test_tree = _split_tree(_scan_classes(root), test_fraction, seed)
    if not train_tree:
        raise InputError(
            f"no images found under {str(root)!r}; expected root/<class>/*{'|*'.join(IMAGE_EXTENSIONS[:3])}"
        )
    class_names = sorted(train_tree)
    index = {c: i for i, c in enumerate(class_names)}
    first = next(iter(train_tree.values()))[0]
    if size is None:
        size = tuple(load_image(first, size=None, resize=resize, mode=mode).shape[1:])
    if normalization is None:
        normalization = "imagenet" if mode == "RGB" else ((0.5,), (0.5,))
    mean, std = NORMALIZATION[normalization] if isinstance(normalization, str) else normalization
    splits = {}
    for split, tree in (("train", train_tree), ("test", test_tree)):
        paths = [f for c in class_names for f in tree.get(c, [])]
        labels = np.array([index[c] for c in class_names for _ in tree.get(c, [])], dtype=np.int64)
        ds = ImageListDataset(paths, size=size, resize=resize, mode=mode, mean=mean, std=std)
        splits[split] = LabeledSplit(ds, labels)
    hw = (size, size) if isinstance(size, int) else tuple(size)
    return LabeledData(
        name="imagefolder",
        train=splits["train"],
        test=splits["test"],
        num_classes=len(class_names),
        input_shape=(3 if mode == "RGB" else 1, *hw),
        class_names=class_names,
        augment=None,
        normalization=(tuple(mean), tuple(std)),
        meta={"data_dir": str(root)},
    )


def _split_tree(tree: dict[str, list[Path]], test_fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    train, test = {}, {}
    for c, files in tree.items():
        n_test = int(round(test_fraction * len(files)))
        n_test = min(max(n_test, 1 if len(files) > 1 else 0), len(files) - 1)
        perm = rng.permutation(len(files))
        test[c] = [files[i] for i in sorted(perm[:n_test])]
        train[c] = [files[i] for i in sorted(perm[n_test:])]
    return train, test
