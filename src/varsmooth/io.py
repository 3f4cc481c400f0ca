"""Atomic file writes, checked reads and the metadata every run folder records.

Every file the library writes goes through :func:`atomic_write`: the content is written to a temporary file in the
same folder, flushed, fsynced and renamed over the target, so a killed process never leaves a half-written file.
The temporary file's name carries the host and process id (``.NAME.HOST.PID.XXXX.tmp``), so the next open of the
folder (:func:`remove_orphaned_tmp`) removes those a killed process left. :func:`read_json` and :func:`read_csv`
raise :class:`~varsmooth.errors.InputError` naming the file when it is empty, truncated or not what was expected.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import platform
import re
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InputError, file_error

_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
_TMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[io.IOBase]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` atomically, on error it is removed."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    make_folder(path.parent)
    try:
        fd, tmp = _mkstemp(path)
    except OSError as err:
        raise _named(err, path) from None
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):  # a full disk: say which file
            raise _named(err, path) from None
        raise


def _mkstemp(path: Path) -> tuple[int, str]:
    return tempfile.mkstemp(prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp", dir=path.parent)


def _named(err: OSError, path: Path) -> OSError:
    """``err`` naming ``path`` (the file being written), not its temporary file or none (a write on a full disk)."""
    if err.errno is None:
        return err
    return type(err)(err.errno, err.strerror or os.strerror(err.errno), str(path))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (text or bytes) to ``path`` atomically."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically. numpy scalars and arrays are converted to Python values."""
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=_to_builtin) + "\n")


def read_json(path: str | os.PathLike, *, keys: tuple[str, ...] | None = None) -> Any:
    """The JSON value in ``path``; with ``keys``, a JSON object holding at least those keys. InputError naming the
    file when it is empty, truncated, not UTF-8 JSON or (with ``keys``) of another shape."""
    try:
        with open_regular(path) as f:
            data = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        what = "it is empty" if isinstance(err, json.JSONDecodeError) and not err.doc.strip() else (
            f"not valid JSON ({type(err).__name__} at byte {getattr(err, 'pos', getattr(err, 'start', 0))})")
        raise file_error(path, what) from None
    except RecursionError:
        raise file_error(path, "JSON nested too deeply") from None
    if keys is not None:
        if not isinstance(data, dict):
            raise file_error(path, f"expected a JSON object, found a {type(data).__name__}")
        missing = [k for k in keys if k not in data]
        if missing:
            raise file_error(path, f"the JSON object lacks {', '.join(missing)}")
    return data


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    import torch

    with atomic_open(path, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as err:  # torch's zip writer wraps the OSError of a failed write (a full disk)
            raise _os_error_of(err) from None


def _os_error_of(err: BaseException) -> OSError:
    """The ``OSError`` in ``err``'s chain (what torch's zip writer raised over), else an EIO naming the writer."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    first = (str(err).splitlines() or [type(err).__name__])[0][:120]
    return OSError(errno.EIO, f"torch's writer failed ({first})")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line with one ``O_APPEND`` write, then fsync: never a read-modify-write, so lines of
    concurrent writers can neither be lost nor repeated (the run folder's lock, :mod:`varsmooth.lock`, keeps
    writers to one anyway)."""
    line = (json.dumps(record, default=_to_builtin) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(line)
        while view:  # a regular file takes the whole line at once; loop only for the rare short write
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages a result depends on."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("varsmooth", "torch", "numpy", "scipy", "sklearn", "matplotlib"):
        try:
            module = __import__(name)
            out[name] = str(getattr(module, "__version__", "unknown"))
        except ImportError:
            continue
    return out


def _to_builtin(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    try:
        import torch

        if isinstance(obj, torch.Tensor):
            return obj.tolist()
    except ImportError:
        pass
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def write_csv(path: str | os.PathLike, rows: list[dict], columns: list[str] | None = None) -> None:
    """Write ``rows`` (dicts) as CSV atomically; ``columns`` defaults to the keys in first-seen order."""
    import csv

    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_open(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="raise")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    import csv

    try:
        with open_regular(path, text=True) as f:
            return list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as err:
        raise file_error(path, f"not a UTF-8 CSV file ({type(err).__name__})") from None


def check_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """``path`` as a Path when it can be an output folder (absent, or a folder); InputError when it is empty, names
    a component longer than the file system allows, or it, or a folder above it, is a file. Nothing is created."""
    if os.fspath(path) == "":
        raise InputError(f"{flag} '' is empty; give a folder path (use {flag} . for the current folder)")
    path = Path(path).expanduser()
    full = len(os.fsencode(str(path.absolute())))
    if full >= _PATH_MAX:
        raise InputError(f"{flag} {str(path)[:60]!r}... is {full} bytes long; paths are limited to {_PATH_MAX - 1}")
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = "" if p == path else f": {str(p)!r} is a file"
                raise InputError(f"{flag} {str(path)!r} is not a folder{where}; give a folder path")
            _check_names(path, p, flag)
            break
    return path


_PATH_MAX = 4096  # Linux's PATH_MAX; macOS allows 1024, where the OS's own error still reaches the user in one line


def _check_names(path: Path, existing: Path, flag: str) -> None:
    """InputError when a component of ``path`` below the folder ``existing`` is longer than its file system's
    NAME_MAX (so that no folder is made before the long name fails)."""
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    for part in path.parts[len(existing.parts) :]:
        if len(os.fsencode(part)) > name_max:
            raise InputError(f"{flag}: the folder name {part[:40]!r}... is {len(os.fsencode(part))} bytes; this "
                             f"file system allows {name_max}; use a shorter name")  # fmt: skip


def missing_folders(path: str | os.PathLike) -> list[Path]:
    """The folders of ``path`` (itself and those above) that do not exist yet, deepest first."""
    if os.fspath(path) == "":
        return []
    out = []
    for p in (Path(path).expanduser().absolute(), *Path(path).expanduser().absolute().parents):
        if p.exists() or p.is_symlink():
            break
        out.append(p)
    return out


def remove_empty(folders: list[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that exists and is empty: what a refused command made."""
    for p in folders:
        with contextlib.suppress(OSError):
            p.rmdir()


def make_folder(path: str | os.PathLike) -> Path:
    """``mkdir -p path``; when it fails (a name too long, no permission), the folders it made are removed again."""
    path = Path(path)
    new = missing_folders(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        remove_empty(new)
        raise
    return path


def open_regular(path: str | os.PathLike, *, text: bool = False, what: str = "a regular file") -> io.IOBase:
    """Open ``path`` for reading when it is a regular file (symlinks followed); an InputError naming it when it is
    a FIFO, a socket, a device or a folder: one read of such a file would block or never end. Opened with
    ``O_NONBLOCK`` and checked with ``fstat`` on the open descriptor, so nothing is swapped in between."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except IsADirectoryError:
        raise InputError(f"{os.fspath(path)!s} is a folder; give {what}") from None
    except OSError as err:
        if err.errno != errno.ENXIO:  # ENXIO: a socket (or a device without its driver): not a file to read
            raise
        kind = file_kind(os.stat(path).st_mode)
        raise InputError(f"{os.fspath(path)!s} is {kind}, not a regular file; give {what}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{os.fspath(path)!s} is {file_kind(mode)}, not a regular file; give {what}")
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return io.TextIOWrapper(f, encoding="utf-8", newline="") if text else f


def file_kind(mode: int) -> str:
    """What a non-regular file is, from its ``st_mode``: "a FIFO (named pipe)", "a socket", ..."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):  # fmt: skip
        if test(mode):
            return name
    return "a special file"


def check_regular(path: str | os.PathLike, what: str = "a regular file") -> Path:
    """``path`` as a Path when it is absent or a regular file; InputError (as :func:`open_regular`) otherwise."""
    p = Path(path)
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        mode = p.stat().st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{os.fspath(path)!s} is {file_kind(mode)}, not a regular file; give {what}")
    return p


def remove_orphaned_tmp(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of :func:`atomic_open` in ``folder`` (not below) whose process on this host no
    longer runs (a killed write); returns what was removed. Files of other hosts and of live processes stay."""
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            m = _TMP.match(entry.name)
            if m is None or m["host"] != _HOST or _alive(int(m["pid"])) or not entry.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True
