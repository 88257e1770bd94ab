"""The restricted unpickler (MMSA loader): NumPy arrays and containers load as with pickle;
no resolved call may allocate memory the file does not hold (found: a 30-byte .pkl calling
builtins.bytes(2**30) allocated 1 GiB before the type check)."""

from __future__ import annotations

import io
import pickle
import time
import tracemalloc

import numpy as np
import pytest

from mlmm.data.loaders.mmsa import read_pickle
from mlmm.data.loaders.safe_pickle import safe_load
from mlmm.errors import UnsafeFileError

GIB = 2**30


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_arrays_and_containers_round_trip(protocol):
    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "ids": ["x", "y"],
           "obj": np.array(["s", 1], dtype=object),
           "scalar": np.float64(2.5), "t": (1, 2.0, None, b"raw", b""), "empty": np.zeros((0, 4))}
    out = safe_load(io.BytesIO(pickle.dumps(obj, protocol=protocol)))
    assert type(out["a"]) is np.ndarray and out["a"].dtype == np.float32 and np.array_equal(out["a"], obj["a"])
    assert type(out["obj"]) is np.ndarray and out["obj"].tolist() == ["s", 1]
    assert out["ids"] == ["x", "y"] and out["scalar"] == 2.5 and out["t"] == obj["t"] and out["empty"].shape == (0, 4)


def _refused_fast(payload: bytes, match: str) -> None:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(UnsafeFileError, match=match):
            safe_load(io.BytesIO(payload))
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 2**24 and time.perf_counter() - start < 1.0  # nothing near the size asked for


def test_bytes_of_a_size_is_refused_before_allocating():
    payload = b"\x80\x02" + _global("builtins", "bytes") + b"J\x00\x00\x00\x40\x85R."  # bytes(2**30)
    assert len(payload) < 40
    _refused_fast(payload, r"builtins.bytes\(1073741824\)")


def test_scalar_from_a_dtype_alone_is_refused():
    big = pickle.dumps(np.dtype(f"V{GIB}"), protocol=2)[2:-1]  # the dtype, built from the file
    payload = b"\x80\x02" + _global("numpy._core.multiarray", "scalar") + big + b"\x85R."
    _refused_fast(payload, r"scalar from NoneType bytes")


def test_array_state_claiming_more_than_the_file_holds_is_refused():
    good = pickle.dumps(np.array([1, 2], dtype=object), protocol=2)
    # the shape tuple (2,) becomes (10**8,) (an 800 MB object array) while the list stays 2 items
    bad = good.replace(b"K\x02\x85", b"J\x00\xe1\xf5\x05\x85", 1)
    assert bad != good
    _refused_fast(bad, r"object array of shape \(100000000,\) from 2 items")
    raw = pickle.dumps(np.zeros(2), protocol=2)
    _refused_fast(raw.replace(b"K\x02\x85", b"J\x00\xe1\xf5\x05\x85", 1), r"shape \(100000000,\) float64 from 16 bytes")


def test_reconstruct_of_a_large_shape_is_refused():
    good = pickle.dumps(np.zeros(1), protocol=2)
    bad = good.replace(b"K\x00\x85", b"J\x00\xe1\xf5\x05\x85", 1)  # _reconstruct(ndarray, (10**8,), ...)
    assert bad != good
    _refused_fast(bad, r"_reconstruct of shape")


def test_read_pickle_names_the_file(tmp_path):
    path = tmp_path / "bomb.pkl"
    path.write_bytes(b"\x80\x02" + _global("builtins", "bytes") + b"J\x00\x00\x00\x40\x85R.")
    with pytest.raises(UnsafeFileError, match=r"bomb.pkl: refusing builtins.bytes"):
        read_pickle(path)
