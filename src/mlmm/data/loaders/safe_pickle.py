"""A restricted unpickler for NumPy array pickles: it resolves only NumPy arrays, dtypes,
scalars and builtin containers, and no resolved call may allocate memory by argument.

``pickle.Unpickler.find_class`` alone is not enough: an allowed callable can still be asked
to allocate a size named in the file (``builtins.bytes(2**30)`` is 30 bytes of pickle and a
GiB of memory; so are ``numpy.core.multiarray.scalar(dtype('V1000000000'))`` and an array
whose pickled state claims 10**9 objects). Each such callable is replaced by a guard that
checks the size against the data actually in the file before anything is allocated.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import io
import pickle
from typing import Any

import numpy as np

from ...errors import UnsafeFileError

try:  # NumPy 2 moved the pickle helpers to numpy._core; pickles name either module
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
    from numpy.core.multiarray import scalar as _np_scalar

_SAFE = {
    ("builtins", "dict"): dict, ("builtins", "list"): list, ("builtins", "tuple"): tuple,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "str"): str,
    ("builtins", "int"): int, ("builtins", "float"): float, ("builtins", "bool"): bool,
    ("builtins", "complex"): complex, ("builtins", "slice"): slice,
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    ("numpy", "dtype"): np.dtype,
}


def _refuse(what: str) -> None:
    raise UnsafeFileError(f"refusing {what}: a call that would allocate memory the file does not hold")


def _bytes(*args: Any) -> bytes:
    """``bytes(...)`` except ``bytes(N)`` (N zero bytes): only data present in the file."""
    if args and isinstance(args[0], int):
        _refuse(f"builtins.bytes({args[0]})")
    return bytes(*args)


def _encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``codecs.encode`` as protocol-2 pickles use it (a str to latin-1 bytes), nothing else."""
    if not isinstance(obj, str) or codecs.lookup(encoding).name != "iso8859-1":
        _refuse(f"codecs.encode(..., {encoding!r})")
    return codecs.encode(obj, encoding, errors)


class _CheckedArray(np.ndarray):
    """What the guarded ``_reconstruct`` builds: an ndarray whose ``__setstate__`` checks that
    the state's shape is backed by the data in the file before NumPy allocates it. Turned
    back into plain ndarrays once loading is done."""

    def __setstate__(self, state: Any) -> None:
        shape, dtype, data = state[1], state[2], state[-1]
        n = int(np.prod(shape, dtype=np.float64)) if len(shape) else 1
        if not isinstance(dtype, np.dtype):
            _refuse("an array state without a dtype")
        if dtype.hasobject:
            supplied = len(data) if isinstance(data, (list, tuple)) else -1
            if supplied != n:
                _refuse(f"an object array of shape {tuple(shape)} from {supplied} items")
        elif not isinstance(data, (bytes, bytearray)) or len(data) != n * dtype.itemsize:
            got = len(data) if isinstance(data, (bytes, bytearray)) else type(data).__name__
            _refuse(f"an array of shape {tuple(shape)} {dtype} from {got} bytes")
        super().__setstate__(state)


_NDARRAY = object()  # what `numpy.ndarray` resolves to: usable only as _reconstruct's first argument


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """NumPy's pickle constructor, for plain ndarrays of shape (0,) (the only shape NumPy pickles
    use: the data arrives in ``__setstate__``, checked there)."""
    if subtype is not _NDARRAY or tuple(shape) != (0,):
        _refuse(f"_reconstruct of shape {shape!r}")
    return _np_reconstruct(_CheckedArray, (0,), dtype)


def _scalar(dtype: Any, obj: Any = None) -> Any:
    """``numpy...scalar(dtype, data)`` with the data in the file (not allocated from the dtype alone)."""
    if not isinstance(dtype, np.dtype):
        _refuse("scalar without a dtype")
    if not dtype.hasobject and (not isinstance(obj, bytes) or len(obj) != dtype.itemsize):
        _refuse(f"a {dtype} scalar from {len(obj) if isinstance(obj, bytes) else type(obj).__name__} bytes")
    return _np_scalar(dtype, obj)


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    """Protocol 5's array constructor: a view of the file's bytes, whose size must match the shape."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        _refuse("_frombuffer without a plain dtype")
    size = memoryview(buf).nbytes
    n = int(np.prod(shape, dtype=np.float64)) if len(shape) else 1
    if size != n * dtype.itemsize:
        _refuse(f"an array of shape {tuple(shape)} {dtype} from {size} bytes")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


class SafeArrayUnpickler(pickle.Unpickler):
    """Resolves NumPy arrays / dtypes / scalars and builtin containers, each call guarded."""

    def find_class(self, module: str, name: str) -> Any:
        # protocol 0-2 pickles name Python 2 modules (__builtin__ for builtins), as pickle maps them
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _SAFE:
            return _SAFE[module, name]
        if (module, name) == ("builtins", "bytes"):
            return _bytes
        if (module, name) in (("_codecs", "encode"), ("codecs", "encode")):
            return _encode
        if (module, name) == ("numpy", "ndarray"):
            return _NDARRAY
        if module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            if name == "_reconstruct":
                return _reconstruct
            if name == "scalar":
                return _scalar
        if (module, name) in (("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")):
            return _frombuffer
        if module in ("numpy", "numpy.dtypes") and name.endswith("DType"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only NumPy arrays are allowed; "
                                     "pass trusted=True for a file you trust)")


def _plain(obj: Any) -> Any:
    """Turn the ``_CheckedArray``s of a loaded object back into ndarrays (views, no copy)."""
    if isinstance(obj, _CheckedArray):
        return obj.view(np.ndarray)
    if isinstance(obj, dict):
        for key, value in obj.items():
            obj[key] = _plain(value)
        return obj
    if isinstance(obj, list):
        obj[:] = [_plain(v) for v in obj]
        return obj
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    return obj


def safe_load(file: io.BufferedIOBase) -> Any:
    """Unpickle ``file`` with :class:`SafeArrayUnpickler`."""
    return _plain(SafeArrayUnpickler(file).load())


__all__ = ["SafeArrayUnpickler", "UnsafeFileError", "safe_load"]
