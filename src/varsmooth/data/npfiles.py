"""Reading ``.npy`` and ``.npz`` files from users: regular files only, the format checked, every array's size
checked against the bytes that hold it before numpy allocates it.

``np.load`` on a file that is not a zip archive nor an ``.npy`` file assumes a pickle and answers with advice on
unpickling; an ``.npy`` header may declare a shape of 10^12 entries that numpy allocates before it reads a byte.
:func:`read_npy` and :func:`read_npz` refuse both with one :class:`~varsmooth.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import open_regular

__all__ = ["read_npy", "read_npz"]

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
DEFLATE_MAX_RATIO = 1100  # deflate expands a byte to at most ~1032 bytes: a bound on a compressed member's size


def _bad(path: Path, what: str) -> InputError:
    return InputError(f"cannot read {str(path)!r}: {what}")


def _read_header(f, path: Path, member: str = "") -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes of data declared) of the .npy stream ``f`` positioned at its start."""
    where = f" (array {member!r})" if member else ""
    try:
        version = np.lib.format.read_magic(f)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in reader:
            raise ValueError(f"unsupported .npy version {version}")
        shape, _, dtype = reader[version](f)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as err:
        raise _bad(path, f"not a valid .npy array{where} ({str(err).splitlines()[0][:80]})") from None
    if dtype.hasobject:
        raise _bad(path, f"the array{where} holds Python objects (dtype {dtype}); save plain numbers or strings")
    count = 1
    for n in shape:
        count *= int(n)
    return tuple(shape), dtype, count * dtype.itemsize


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """The array in the ``.npy`` file ``path``; InputError naming the file when it is not a regular file, not an
    ``.npy`` file, holds objects, or declares more data than it holds."""
    path = Path(path)
    with open_regular(path, what="a .npy file") as f:
        if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
            raise _bad(path, "not a valid .npy file (no .npy header)")
        f.seek(0)
        _, _, declared = _read_header(f, path)
        have = os.fstat(f.fileno()).st_size - f.tell()
        if declared > have:
            raise _bad(path, f"the header declares {declared} bytes of data, the file holds {have}: truncated")
        f.seek(0)
        try:
            return np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise _bad(path, f"not a valid .npy file ({str(err).splitlines()[0][:80]})") from None


def read_npz(path: str | os.PathLike, names: tuple[tuple[str, ...], ...]) -> list[np.ndarray]:
    """For each group of ``names`` (e.g. ``("X", "features")``), the array of the first name present in the
    ``.npz`` file ``path``. InputError naming the file when it is not a regular file, not a zip archive, lacks a
    group, or an array declares more data than its member of the archive can hold."""
    path = Path(path)
    with open_regular(path, what="an .npz file") as f:
        if f.read(4) not in _ZIP_MAGIC:
            raise _bad(path, "not a valid .npz file (not a zip archive of .npy arrays)")
        f.seek(0)
        try:
            archive = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            raise _bad(path, f"not a valid .npz file ({str(err).splitlines()[0][:80]})") from None
        with archive:
            members = {n[: -len(".npy")]: n for n in archive.namelist() if n.endswith(".npy")}
            out = []
            for group in names:
                key = next((k for k in group if k in members), None)
                if key is None:
                    have = ", ".join(sorted(members)) or "none"
                    raise InputError(f"{str(path)!r} has no array named {' or '.join(group)} (arrays: {have})")
                out.append(_member(archive, members[key], key, path))
            return out


def _member(archive: zipfile.ZipFile, name: str, key: str, path: Path) -> np.ndarray:
    info = archive.getinfo(name)
    bound = info.compress_size * (DEFLATE_MAX_RATIO if info.compress_type != zipfile.ZIP_STORED else 1)
    try:
        with archive.open(info) as m:
            _, _, declared = _read_header(m, path, key)
            if declared > min(info.file_size, bound):
                raise _bad(path, f"array {key!r} declares {declared} bytes of data, its member of the archive "
                           f"holds at most {min(info.file_size, bound)}: truncated or forged")  # fmt: skip
        with archive.open(info) as m:
            return np.lib.format.read_array(m, allow_pickle=False)
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError) as err:
        raise _bad(path, f"array {key!r} is not readable ({str(err).splitlines()[0][:80]})") from None
