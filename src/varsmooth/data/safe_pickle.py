"""A restricted unpickler for data files (CIFAR python batches) that never runs code from the file.

A pickle can name any importable callable (``os.system`` through ``__reduce__``), so ``pickle.load`` on a
downloaded file is arbitrary code execution. CIFAR batches are plain dicts of bytes keys, lists, bytes and numpy
arrays; :class:`RestrictedUnpickler` resolves only the globals such a file needs to rebuild numpy arrays (under the
numpy 1.x and 2.x module names) plus ``_codecs.encode`` restricted to latin-1 (how protocol <= 2 stores ``bytes``),
and refuses every other global with :class:`~varsmooth.errors.InputError`.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["RestrictedUnpickler", "restricted_load", "numpy_safe_globals"]

# The array / scalar reconstruction functions, whatever module numpy keeps them in (numpy.core vs numpy._core).
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5 rebuilds arrays from a buffer


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol <= 2 pickles use it for ``bytes``: latin-1 of a str, nothing else."""
    if not isinstance(obj, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode({type(obj).__name__}, {encoding!r}) is not allowed")
    return codecs.encode(obj, "latin-1", errors)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): bytes,  # protocol 2 stores b"" as bytes()
    ("builtins", "bytes"): bytes,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _RECONSTRUCT
    _ALLOWED[(_mod, "scalar")] = _SCALAR
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_mod, "_frombuffer")] = _FROMBUFFER


class _Refused(pickle.UnpicklingError):
    pass


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` allows only numpy array reconstruction and latin-1 bytes."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def restricted_load(data: bytes | io.BufferedIOBase, *, source: str | os.PathLike = "<bytes>") -> Any:
    """Unpickle ``data`` (bytes or a binary file) with :class:`RestrictedUnpickler`.

    Python 2 ``str`` objects come back as ``bytes`` (``encoding="bytes"``, as the CIFAR website recommends).
    A refused global or a corrupt / truncated stream raises InputError naming ``source``.
    """
    f = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    try:
        return RestrictedUnpickler(f, encoding="bytes").load()
    except _Refused as err:
        raise InputError(
            f"{str(source)!r}: pickle references a callable {err} (not a plain container, bytes or numpy array); "
            "refusing to load"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        msg = str(err).split("\n")[0]
        raise InputError(f"{str(source)!r} is not a valid pickle (corrupt or truncated): {msg}") from None


def numpy_safe_globals() -> list:
    """numpy array globals for ``torch.serialization.safe_globals`` (also under numpy 1.x's ``numpy.core`` name)."""
    out: list = [_RECONSTRUCT, np.ndarray, np.dtype]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out.append((_RECONSTRUCT, f"{mod}._reconstruct"))
    if hasattr(np, "dtypes"):
        out += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return out
