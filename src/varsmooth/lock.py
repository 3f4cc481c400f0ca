"""An exclusive lock on a run folder or a sweep folder, held for the life of the process that works in it.

:func:`hold` takes ``FOLDER/.lock`` with ``fcntl.flock`` (non-blocking) and writes the holder -- pid, host and
start time -- into it. A second process gets :class:`~varsmooth.errors.InputError` with one line naming that
holder. The kernel releases a flock when its process dies, however it dies (``kill -9`` included), so a lock left
by a killed process is simply free: the next process takes it and overwrites the stale holder line; no pid file is
ever trusted. Within one process the lock is reentrant (a sweep holds its folder while the engine takes the same
folder again). A lock file is removed only by its holder while it still holds it (one this call made, when the
block raised bad input or wrote nothing), and a lock taken on a file that was removed or replaced meanwhile is
retried, so two processes can never both hold one folder. POSIX only (``fcntl``); on a network file system the
lock is as good as the mount's ``flock``.

While it holds a folder, a process also removes the temporary files that a killed writer left there
(``.NAME.*.tmp`` of :func:`varsmooth.io.atomic_open`), in the folder and in sub-folders that no other process holds.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError
from .io import remove_orphaned_tmp

__all__ = ["LOCK_NAME", "hold", "holder", "is_held"]

LOCK_NAME = ".lock"

_held: dict[str, list[int]] = {}  # realpath of a lock file -> [fd, depth] for the locks this process holds
_guard = threading.Lock()


def _holder_line() -> str:
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return f"pid {os.getpid()} on host {socket.gethostname()}, started {now}"


def holder(folder: str | os.PathLike, *, name: str = LOCK_NAME) -> str:
    """The holder line recorded in ``folder/name`` ("" when there is none); says nothing about whether it is held."""
    try:
        return (Path(folder) / name).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _wait_for_holder(folder: Path, name: str) -> str:
    """The holder line, waiting up to ~1 s for a holder that has just taken the lock to write it."""
    for _ in range(20):
        who = holder(folder, name=name)
        if who:
            return who
        time.sleep(0.05)
    return "holder not recorded"


def _try_lock(path: Path) -> int | None:
    """An fd of ``path`` holding its exclusive flock, or None when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        try:  # the file may have been removed or replaced between open and flock: then lock the new one
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def is_held(folder: str | os.PathLike, *, name: str = LOCK_NAME) -> bool:
    """Whether another process holds ``folder/name`` now (False for this process's own locks and for no file)."""
    path = Path(folder) / name
    if not path.exists():
        return False
    with _guard:
        if os.path.realpath(path) in _held:
            return False
    fd = _try_lock(path)
    if fd is None:
        return True
    os.close(fd)
    return False


def _held_or_unknown(folder: Path, name: str) -> bool:
    try:
        return is_held(folder, name=name)
    except OSError:  # a lock file this process may not open: leave that folder alone
        return True


def _clean_orphans(folder: Path, name: str) -> None:
    """Remove the temporary files left by killed writers (:func:`varsmooth.io.remove_orphaned_tmp`) in ``folder``
    and in the sub-folders no other process holds."""
    for dirpath, dirnames, _ in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not _held_or_unknown(here / d, name)]
        remove_orphaned_tmp(here)


@contextlib.contextmanager
def hold(
    folder: str | os.PathLike, *, what: str = "folder", name: str = LOCK_NAME, clean: bool = True
) -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` (created if missing) for the block; yields the folder.

    Raises :class:`InputError` (one line: the folder, ``what`` it is, and the holder's pid, host and start time)
    when another process holds it. Reentrant within a process. ``name``: the lock file (e.g. one per shard of a
    sweep); ``clean``: remove orphaned temporary files on taking it (off where another lock name may be writing in
    the same folder). When the block raises :class:`InputError` (bad input: nothing else was written), the lock
    file is put back as it was -- removed if this call made it, with the folder if this call made that.
    """
    folder = Path(folder)
    created = [d for d in (folder, *folder.parents) if not d.exists()]  # the folders this call makes, deepest first
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    key = os.path.realpath(path)
    with _guard:
        mine = _held.get(key)
        if mine is not None:
            mine[1] += 1
    before = None
    if mine is None:
        before = path.read_bytes() if path.exists() else None
        fd = _try_lock(path)
        if fd is None:
            _remove_empty(created)
            who = _wait_for_holder(folder, name)
            raise InputError(
                f"{what} {str(folder)!r} is in use by another varsmooth process ({who}); wait for it to finish "
                "or use another --out"
            )
        try:
            _write(fd, (_holder_line() + "\n").encode())
        except BaseException:  # e.g. a full disk: put the file back as it was and close it, then report
            with contextlib.suppress(OSError):
                _release(fd, path, folder, restore=before, created=created)
            raise
        with _guard:
            _held[key] = [fd, 1]
    bad_input = False
    try:
        if clean and mine is None:
            _clean_orphans(folder, name)
        yield folder
    except InputError:
        bad_input = True
        raise
    finally:
        with _guard:
            entry = _held[key]
            entry[1] -= 1
            last = entry[1] == 0
            if last:
                del _held[key]
        if last:
            _release(entry[0], path, folder, restore=before if bad_input and mine is None else b"", created=created)


def _write(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty."""
    for d in folders:
        try:
            d.rmdir()
        except OSError:
            return


def _release(fd: int, path: Path, folder: Path, *, restore: bytes | None, created: list[Path]) -> None:
    """Unlock; ``restore``: b"" keep the file, None remove it (this call made it), else write these bytes back.
    A folder this call made that holds nothing else goes too. Files are removed while still locked, so no other
    process can hold a removed file."""
    try:
        if not path.exists():  # the block removed the folder (a fresh folder cleared after bad input)
            return
        only_lock = bool(created) and [p.name for p in folder.iterdir()] == [path.name]
        if restore is None or only_lock:
            os.unlink(path)
            _remove_empty(created)
        elif restore:
            _write(fd, restore)
    finally:
        os.close(fd)
