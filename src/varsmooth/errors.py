"""The one exception type for bad user input, and the one wording of operating-system errors.

Library code raises :class:`InputError` (a ``ValueError``) with one line naming the bad value and what is allowed;
the CLI turns it into that line on stderr and exit code 2, with no traceback. An ``OSError`` (disk full, read-only
folder, a file where a folder is expected, ...) reaches the user through :func:`os_error_message`: what failed,
which file, and what to do; :func:`os_errors` turns it into an :class:`InputError` at the library's entry points.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from enum import Enum
from typing import TypeVar

_E = TypeVar("_E", bound=Enum)


class InputError(ValueError):
    """Bad input from the user: a value, a file, a config key. The message is one line."""


def parse_choice(cls: type[_E], value: str | _E, what: str) -> _E:
    """The member of the option Enum ``cls`` named ``value``; an :class:`InputError` naming ``what`` and listing
    the allowed values otherwise."""
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in cls)
        raise InputError(f"unknown {what} {value!r}; allowed: {allowed}") from None


# errno -> (what happened, what to do)
_OS_ADVICE: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", "free some space or use another --out"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or use another --out"),
    errno.EROFS: ("the file system is read-only", "use a writable --out"),
    errno.EACCES: ("permission denied", "check the permissions or use another --out"),
    errno.EPERM: ("operation not permitted", "check the permissions or use another --out"),
    errno.EEXIST: ("a file is in the way", "remove it or use another --out"),
    errno.ENOTDIR: ("a file is in the way of a folder", "remove that file or use another --out"),
    errno.EISDIR: ("a folder is in the way of a file", "remove that folder or use another --out"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.EIO: ("input/output error", "check the disk"),
    errno.ENAMETOOLONG: ("the file name is too long", "use a shorter path"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) or use fewer --jobs"),
}


def os_error_message(err: OSError) -> str:
    """One line for an ``OSError``: what happened, which file, what to do (e.g. ``cannot write /x/config.json: no
    space left on the device (ENOSPC); free some space or use another --out``)."""
    what, todo = _OS_ADVICE.get(err.errno, (err.strerror or str(err) or type(err).__name__, "check the path"))
    code = errno.errorcode.get(err.errno, "") if err.errno is not None else ""
    files = [f for f in (err.filename, err.filename2) if f is not None]
    where = " -> ".join(os.fsdecode(f) if isinstance(f, bytes | os.PathLike) else str(f) for f in files)
    head = f"cannot use {where}: " if where else ""
    text = f"{head}{what}" + (f" ({code})" if code else "") + f"; {todo}"
    return " ".join(text.split())  # one line


@contextlib.contextmanager
def os_errors() -> Iterator[None]:
    """Turn an ``OSError`` raised in the block into an :class:`InputError` worded by :func:`os_error_message`."""
    try:
        yield
    except OSError as err:
        raise InputError(os_error_message(err)) from None


def file_error(path: os.PathLike | str, what: str, todo: str = "restore or delete it") -> InputError:
    """The :class:`InputError` of an unreadable, truncated or foreign file: ``{path} ... {what}; {todo}``."""
    return InputError(" ".join(f"cannot read {os.fspath(path)}: {what}; {todo}".split()))
