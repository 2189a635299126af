"""Reading data pickles without letting them run code.

A pickle is a program: any global it names is imported and may be called, so loading one with
:func:`pickle.load` can run anything (``os.system``, ``builtins.exec``). Corpora are still
distributed as pickles (the Boulanger-Lewandowski music pickles, written by Python 2 with numpy
integer scalars), so :func:`load` reads them with an unpickler that resolves only an explicit
list of globals: plain containers and numbers, and numpy's scalar and array reconstruction.
Every other global is refused before anything is imported or called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from seqvae.errors import UserError

try:  # numpy >= 2 moved its internals to numpy._core; old pickles still name numpy.core
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes at protocols 0-2 (numpy scalars and arrays
    included): only the latin-1 round trip, never another codec."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


_NUMPY = {
    "scalar": _multiarray.scalar,  # numpy scalars (np.int64(60))
    "_reconstruct": _multiarray._reconstruct,  # arrays, protocols 0-4
}
ALLOWED: dict[tuple[str, str], Any] = {
    **{(module, name): obj for module in ("numpy.core.multiarray", "numpy._core.multiarray")
       for name, obj in _NUMPY.items()},
    # arrays at protocol 5 (the default from Python 3.14): frombuffer plus a reshape
    **{(module, "_frombuffer"): _numeric._frombuffer
       for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    # Python 2 pickles name the builtins module __builtin__
    **{(module, name): obj for module in ("builtins", "__builtin__")
       for name, obj in (("set", set), ("frozenset", frozenset), ("complex", complex))},
    ("_codecs", "encode"): _latin1_bytes,
}  # fmt: skip
"""The only globals a data pickle may name, resolved here to the real objects (the module
strings in the pickle are never imported)."""


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside :data:`ALLOWED`."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"refusing to load the global {module}.{name}")
        self.qualified = f"{module}.{name}"


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain containers, numbers and numpy scalars/arrays."""

    def find_class(self, module: str, name: str) -> Any:
        # every global a pickle uses (GLOBAL, STACK_GLOBAL, the copyreg extension codes) goes
        # through here, so nothing outside the list can be imported, built or called
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a data pickle")


def loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler`; Python 2 strings are read as latin-1
    (so that numpy's pickled scalar bytes come back intact)."""
    return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()


def load(path: Path, what: str = "pickle") -> Any:
    """The object pickled in ``path``; a :class:`UserError` naming the file (and the refused
    global, if any) when it is not a data pickle. ``what`` names the expected content."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read this {what} ({error})") from error
    try:
        return loads(data)
    except RefusedGlobal as error:
        raise UserError(
            f"{path}: refused to load this {what}: it names the global {error.qualified}, which "
            "could run code; only plain containers, numbers and numpy scalars/arrays are "
            "loaded (re-save the data with plain lists, or as JSON)"
        ) from None
    except Exception as error:  # a corrupt or truncated pickle fails in many ways
        raise UserError(
            f"{path}: not a readable {what} ({type(error).__name__}: {error})"
        ) from None
